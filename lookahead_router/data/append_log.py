"""Append-only JSON Lines files that a killed process can resume: collection's responses and
scores (``collection/store.py``) and the offline `lookahead route`'s decisions
(``evaluation/offline_route.py``).

Records are appended whole lines at a time, flushed and synced (``fsync``) before the writer goes
on, so a crash loses at most the line being written. That line, left without its newline, is the
only thing a reader may find incomplete: ``rows`` skips it, and ``repair`` cuts it off the file
(with a warning) before a resumed run appends, so the next record starts on a line of its own. A
complete line that is not a JSON object is not a crash's trace but a wrong file: an error naming
file and line.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable, Iterator

from lookahead_router.errors import LookaheadError

log = logging.getLogger(__name__)


class AppendLog:
    """One append-only JSON Lines file of objects. ``error`` is the class raised for a malformed
    line (each caller's own, so its users see the file's kind in the error)."""

    def __init__(self, path: str | Path, error: type[Exception] = LookaheadError):
        self.path, self.error = Path(path), error

    def _data(self) -> tuple[bytes, int]:
        """The file's bytes and the length of its complete lines (0 when none is complete)."""
        data = self.path.read_bytes() if self.path.exists() else b""
        return data, data.rfind(b"\n") + 1

    def rows(self, hint: str = "") -> Iterator[tuple[str, dict]]:
        """("file:line", object) for each complete, non-blank line; a torn last line is skipped.
        Reads only: the file is left as it is. ``hint`` ends the message of a malformed line (what
        the user should do about it)."""
        data, keep = self._data()
        for lineno, raw in enumerate(data[:keep].split(b"\n")[:-1], 1):
            if not raw.strip():
                continue
            where = f"{self.path}:{lineno}"
            try:
                row = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise self.error(f"{where}: not valid JSON ({exc}){hint}") from exc
            if not isinstance(row, dict):
                raise self.error(f"{where}: expected a JSON object, not {type(row).__name__}{hint}")
            yield where, row

    def repair(self, warn: bool = True) -> int:
        """Cut a torn last line (a write a crash cut short) off the file; the bytes dropped (0:
        the file ends with a complete line, or does not exist). ``warn``: log a warning saying so
        (off for a caller that reports it itself)."""
        if not self.path.exists():
            return 0
        with self.path.open("r+b") as fh:
            size = keep = fh.seek(0, os.SEEK_END)
            # Only the tail is read, back to the last newline: a resumed file may be large.
            while keep > 0:
                start = max(0, keep - (1 << 16))
                fh.seek(start)
                newline = fh.read(keep - start).rfind(b"\n")
                if newline >= 0:
                    keep = start + newline + 1
                    break
                keep = start
            if keep == size:
                return 0
            fh.truncate(keep)
            os.fsync(fh.fileno())
        if warn:
            log.warning("%s: dropped a partial last line (%d bytes) left by an interrupted write",
                        self.path, size - keep)
        return size - keep

    def append(self, records: Iterable[dict]) -> None:
        """Append ``records``, one line each, in one write; flushed and synced before returning, so
        after a crash every line on disk is whole except possibly the last."""
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if not text:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
