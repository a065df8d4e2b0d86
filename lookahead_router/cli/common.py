"""What every `lookahead` command shares: the Typer apps, consoles and error handling."""

from __future__ import annotations

import json
from typing import List, Optional

import typer
from rich.console import Console

app = typer.Typer(help="Lookahead Router: import routing data, train and evaluate routers.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Routing datasets: import, download, inspect, split.", no_args_is_help=True)
app.add_typer(data_app, name="data")
out = Console(width=max(Console().width, 160))
err = Console(stderr=True)


@app.callback()
def _global_options(
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


def _fail(exc: Exception) -> None:
    err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _known_errors() -> tuple[type[Exception], ...]:
    """Errors caused by the user's input or the network: reported in one line, exit status 2.
    (Every error class of the package derives from ValueError, except DownloadError.)"""
    from lookahead_router.data.download import DownloadError
    return (ValueError, DownloadError)


def parse_value(text: str):
    """A command-line value: JSON when it parses (numbers, true/false, null), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
