"""Every command in the README and the documentation (docs/**/*.md) is checked without running it:
each `lookahead ...` line of a fenced shell block is parsed by the real command line (subcommands
resolved, unknown options, bad values and missing required options fail), the cheap ones
(`--help`, `--version`, `lookahead routers`) also run; every `make TARGET` names a Makefile target;
every relative link and embedded bench/results file exists; every Python block compiles.
Failures name the file and line. `make docs` (mkdocs build --strict, in .ci/run) checks the rest."""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lookahead_router.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DOC_FILES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
SHELL = {"", "bash", "sh", "shell", "console"}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int          # the line of the block's first content line (1-based)
    lang: str
    lines: tuple[str, ...]

    def where(self, offset: int = 0) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line + offset}"


def _blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file (indented fences included, as in list items)."""
    blocks, fence, start, lang, body = [], None, 0, "", []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if fence is None:
            match = re.match(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)", line)
            if match:
                fence, indent, lang, start, body = match.group(2), len(match.group(1)), match.group(3), n + 1, []
            continue
        if stripped.startswith(fence) and stripped.strip("`~") == "":
            blocks.append(Block(path, start, lang.lower(), tuple(body)))
            fence = None
            continue
        body.append(line[indent:] if line[:indent].strip() == "" else line)
    return blocks


BLOCKS = [b for path in DOC_FILES for b in _blocks(path)]


def _prose(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the lines outside fenced blocks."""
    inside = {b.line + i for b in _blocks(path) for i in range(-1, len(b.lines) + 1)}
    return [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if n not in inside]


def _shell_lines(block: Block) -> list[tuple[int, str]]:
    """(offset of the first physical line, the logical line) with backslash continuations joined."""
    out, current, first = [], "", 0
    for i, line in enumerate(block.lines):
        if not current:
            first = i
        text = line.rstrip()
        if text.endswith("\\"):
            current += text[:-1] + " "
            continue
        out.append((first, (current + text).strip()))
        current = ""
    if current:
        out.append((first, current.strip()))
    return out


def _commands() -> list[tuple[str, str]]:
    found = []
    for block in BLOCKS:
        if block.lang not in SHELL:
            continue
        for offset, line in _shell_lines(block):
            line = line.removeprefix("$ ")
            if line.startswith("lookahead "):
                found.append((block.where(offset), line))
    return found


COMMANDS = _commands()


def _args(line: str) -> list[str]:
    """The arguments of a documented command line, with its synopsis notation resolved:
    `[--opt VALUE]` is given (brackets dropped), `a|b` takes the first alternative, `...` is
    dropped, and a trailing `# comment` is ignored."""
    args = []
    for token in shlex.split(line, comments=True)[1:]:
        token = token.lstrip("[").rstrip("]")
        if token in ("", "...", "…"):
            continue
        if "|" in token and not token.startswith(("'", '"')):
            token = token.split("|")[0]
        args.append(token)
    return args


def _parse(args: list[str]) -> None:
    """Parse ``lookahead ARGS`` as the real command line would, without running any command.
    Raises the command line's usage error for an unknown command or option, a bad value or a
    missing required option; eager options (--help, --version) exit cleanly."""
    from typer import Exit
    command, name, ctx = typer.main.get_command(app), "lookahead", None
    try:
        while True:
            ctx = command.make_context(name, list(args), parent=ctx, resilient_parsing=False)
            if not hasattr(command, "commands"):
                return
            rest = [*getattr(ctx, "_protected_args", getattr(ctx, "protected_args", [])), *ctx.args]
            if not rest:
                raise AssertionError("a command group without a subcommand")
            name, command, args = command.resolve_command(ctx, rest)
    except Exit as exc:
        assert exc.exit_code == 0, f"exited {exc.exit_code}"


def _cheap(args: list[str]) -> bool:
    return args[-1:] in (["--help"], ["--version"]) or args == ["routers"]


def test_the_docs_have_commands_to_check():
    assert len(COMMANDS) >= 30, f"only {len(COMMANDS)} `lookahead` commands found: is the extractor broken?"
    assert sum(_cheap(_args(line)) for _, line in COMMANDS) >= 3


@pytest.mark.parametrize("where,line", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_every_documented_command_parses(where, line, capsys):
    try:
        args = _args(line)
        _parse(args)
    except Exception as exc:   # the command line's UsageError, BadParameter, NoSuchOption, ...
        pytest.fail(f"{where}: `{line}` does not parse: {type(exc).__name__}: {exc}")


@pytest.mark.parametrize("where,line", [(w, c) for w, c in COMMANDS if _cheap(_args(c))],
                         ids=[w for w, c in COMMANDS if _cheap(_args(c))])
def test_cheap_documented_commands_run(where, line):
    result = CliRunner().invoke(app, _args(line), env={"COLUMNS": "120"})
    assert result.exit_code == 0, f"{where}: `{line}` exited {result.exit_code}:\n{result.output}"
    assert result.output.strip(), f"{where}: `{line}` printed nothing"


def _make_targets() -> set[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-/ $()]+?)\s*:(?![=:])", line)
        if match and not line.startswith(("\t", "#")):
            targets.update(match.group(1).split())
    return targets


def test_every_make_target_mentioned_exists():
    targets, problems, seen = _make_targets(), [], 0
    for path in DOC_FILES:
        mentions = [(b.where(i), line) for b in _blocks(path) if b.lang in SHELL
                    for i, line in enumerate(b.lines)]
        mentions += [(f"{path.relative_to(ROOT)}:{n}", span) for n, text in _prose(path)
                     for span in re.findall(r"`([^`]*)`", text)]
        for where, text in mentions:
            for target in re.findall(r"(?:^|[\s;&(])make ([A-Za-z][\w-]*)", text):
                seen += 1
                if target not in targets:
                    problems.append(f"{where}: `make {target}`: no such Makefile target")
    assert seen >= 5, "no `make` commands found: is the extractor broken?"
    assert not problems, "\n".join(problems)


def _generated_pages() -> set[str]:
    """The pages docs/reference_hooks.py generates at build time (its GENERATED list)."""
    tree = ast.parse((DOCS / "reference_hooks.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "GENERATED" for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise AssertionError("docs/reference_hooks.py has no GENERATED list")


def test_every_relative_link_and_embedded_file_exists():
    generated = _generated_pages()
    figures = {p.name for p in (ROOT / "bench" / "results").rglob("*.png")}   # served under docs/results/
    problems, checked = [], 0
    for path in DOC_FILES:
        for n, text in _prose(path):
            text = re.sub(r"`[^`]*`", "", text)
            for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                    continue
                checked += 1
                file = target.split("#", 1)[0]
                resolved = (path.parent / file).resolve()
                if resolved.exists():
                    continue
                if DOCS in resolved.parents:
                    inside = resolved.relative_to(DOCS).as_posix()
                    if inside in generated or (inside.startswith("results/") and resolved.name in figures
                                               and resolved.parent == DOCS / "results"):
                        continue
                problems.append(f"{path.relative_to(ROOT)}:{n}: link to {target}: no such file")
            for embedded in re.findall(r'^\s*--8<--\s+"([^"]+)"', text):
                checked += 1
                if not (ROOT / embedded).is_file():
                    problems.append(f"{path.relative_to(ROOT)}:{n}: embeds {embedded}: no such file")
    assert checked >= 20, "hardly any links found: is the extractor broken?"
    assert not problems, "\n".join(problems)


def test_every_python_block_compiles():
    problems, compiled = [], 0
    for block in BLOCKS:
        if block.lang not in ("python", "py"):
            continue
        compiled += 1
        try:
            compile("\n".join(block.lines), block.where(), "exec")
        except SyntaxError as exc:
            problems.append(f"{block.where((exc.lineno or 1) - 1)}: {exc.msg}")
    assert compiled >= 4
    assert not problems, "\n".join(problems)
