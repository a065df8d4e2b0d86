"""The `lookahead` console script: the Typer app, reporting a missing optional dependency in one
line that names the extra to install (``lookahead_router/extras.py``) instead of a traceback, and
any user error (``LookaheadError``) a command did not report itself in one line too."""

from __future__ import annotations

import sys

from lookahead_router.errors import LookaheadError


def main() -> None:
    from lookahead_router.cli.main import app
    from lookahead_router.extras import missing_extra
    try:
        app()
    except ImportError as exc:
        message = missing_extra(exc, sys.argv[1:])
        if message is None:
            raise
        _report(message)
    except LookaheadError as exc:
        # Commands report their own errors (cli/common.py: _fail); this catches one raised outside
        # a command's handler, e.g. while a callback or a lazy import runs. Any other exception,
        # a plain ValueError included, is a bug: its traceback is shown.
        _report(str(exc))


def _report(message: str) -> None:
    from rich.markup import escape

    from lookahead_router.cli.common import err
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise SystemExit(2) from None
