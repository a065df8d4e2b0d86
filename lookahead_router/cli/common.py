"""What every `lookahead` command shares: the Typer apps, consoles and error handling."""

from __future__ import annotations

import json
import os
from typing import List, Optional

import typer
from rich.console import Console, ConsoleDimensions

from lookahead_router.errors import LookaheadError

app = typer.Typer(help="Lookahead Router: import routing data, train and evaluate routers.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Routing datasets: import, download, inspect, split.", no_args_is_help=True)
app.add_typer(data_app, name="data")


class _Console(Console):
    """A terminal's own width; piped to a file or a CI log (no terminal, no $COLUMNS), wide enough
    that tables keep one row per line. Read at each print: a test's $COLUMNS counts."""

    @property
    def size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)
        if self._width is None and not self.is_terminal and "COLUMNS" not in os.environ:
            return ConsoleDimensions(200, size.height)
        return size

    @size.setter
    def size(self, new_size) -> None:
        Console.size.fset(self, new_size)


out = _Console()
err = _Console(stderr=True)


def print_report(report, console: Console | None = None) -> None:
    """A Table 1 report that fits the console: the whole table when it does, else μn and μo in
    two narrower tables (the whole one stays in the command's --out files)."""
    from rich.measure import Measurement
    console = console or out
    table = report.to_rich()
    if Measurement.get(console, console.options.update(max_width=10_000), table).maximum <= console.width:
        console.print(table)
        return
    for part in report.to_rich_narrow():
        console.print(part)
    for note in report.footer():
        console.print(note, highlight=False, soft_wrap=False)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version
        try:
            number = version("lookahead-router")
        except PackageNotFoundError:   # run from a source tree that was never installed
            from lookahead_router import __version__ as number
        typer.echo(f"lookahead-router {number}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the installed version and exit."),
    precision: Optional[str] = typer.Option(
        None, "--precision", envvar="LOOKAHEAD_PRECISION", show_envvar=True,
        help="The torch engine's precision for every command: auto (default: bf16 where the CPU or "
             "GPU runs it natively, else fp32), fp32 (figures that reproduce on every machine) or bf16."),
) -> None:
    # Options of `lookahead` itself, before the command; the app's help is the Typer's above.
    from lookahead_router.precision import PrecisionError, use_precision
    if precision is not None:
        try:
            use_precision(precision.strip().lower())
        except PrecisionError as exc:
            raise typer.BadParameter(str(exc), param_hint="--precision") from None


def _split(values: Optional[List[str]]) -> list[str]:
    """Accept both repeated options and comma-separated lists."""
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def _numbers(values: Optional[List[str]], option: str, kind: type = int) -> list:
    """A list option's numbers (repeated or comma-separated); a value that is not one is an error
    naming the option, not Python's "invalid literal for int()"."""
    numbers = []
    for value in _split(values):
        try:
            numbers.append(kind(value))
        except ValueError:
            expected = "a whole number" if kind is int else "a number"
            raise LookaheadError(f"{option}: {value!r} is not {expected}") from None
    return numbers


def _fail(exc: Exception) -> None:
    from rich.markup import escape   # messages quote user input and lists: "[a, b]" is not markup
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _known_errors() -> tuple[type[Exception], ...]:
    """Errors caused by the user's input or the network: reported in one line, exit status 2.
    Only the package's own errors: any other exception, a plain ValueError included, is a bug and
    keeps its traceback."""
    return (LookaheadError,)


def parse_value(text: str):
    """A command-line value: JSON when it parses (numbers, true/false, null), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
