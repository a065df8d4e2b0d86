"""Prompts files: JSON Lines of objects, each with a unique ``id`` (default: its line number)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator


def prompt_rows(path: str | Path, error: type[Exception] = ValueError) -> Iterator[tuple[str, str, dict]]:
    """(id, "file:line", object) for each non-blank line. A line that is not a JSON object, an id
    that is not a string or an integer, or a repeated id raises ``error`` naming file and line."""
    path = Path(path)
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(row, dict):
                raise error(f"{where}: expected an object with 'prompt' or 'messages'")
            qid = row.get("id", lineno)
            if isinstance(qid, bool) or not isinstance(qid, (str, int)):
                raise error(f"{where}: 'id' must be a string or an integer, not {qid!r}")
            qid = str(qid)
            if qid in seen:
                raise error(f"{where}: duplicate id {qid!r} (first on line {seen[qid]})")
            seen[qid] = lineno
            yield qid, where, row
