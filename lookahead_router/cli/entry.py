"""The `lookahead` console script: the Typer app, reporting a missing optional dependency in one
line that names the extra to install (``lookahead_router/extras.py``) instead of a traceback."""

from __future__ import annotations

import sys


def main() -> None:
    from lookahead_router.cli.main import app
    from lookahead_router.extras import missing_extra
    try:
        app()
    except ImportError as exc:
        message = missing_extra(exc, sys.argv[1:])
        if message is None:
            raise
        from rich.markup import escape

        from lookahead_router.cli.common import err
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
