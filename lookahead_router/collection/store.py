"""The collection folder and its append-only JSON Lines files.

    DIR/responses/<model>.jsonl         one generated response per line    (collect generate)
    DIR/errors.jsonl                    pairs that failed after every retry (collect generate)
    DIR/scores/<scorer>/<model>.jsonl   one score per line                  (collect score)

Every line carries ``id``. Lines are appended and synced as they are produced, so a crash loses at
most the line being written; on the next run a torn last line is dropped and only missing ids are
done again, so nothing is ever done twice and nothing already written is lost.
"""

from __future__ import annotations

import re
from pathlib import Path

from lookahead_router.data.append_log import AppendLog
from lookahead_router.errors import LookaheadError


class StoreError(LookaheadError):
    """A collection file is malformed; the message names the file and line."""


def model_file(folder: Path, model: str) -> Path:
    """``folder/<model>.jsonl``, with characters a file name cannot hold replaced."""
    return Path(folder) / (re.sub(r"[^A-Za-z0-9._-]", "_", model) + ".jsonl")


class JsonlStore:
    """Records keyed by ``id`` in one JSON Lines file, resumable after a crash
    (``data/append_log.py``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._log = AppendLog(self.path, StoreError)

    def load(self, repair: bool = True) -> dict[str, dict]:
        """The complete records by id. A torn last line (no newline: a crash mid-write) is cut off
        the file when ``repair`` is set; a malformed complete line is an error."""
        records: dict[str, dict] = {}
        for where, row in self._log.rows():
            if "id" not in row:
                raise StoreError(f"{where}: a record needs an 'id'")
            records[str(row["id"])] = row  # a later line for the same id supersedes
        if repair:
            self._log.repair()
        return records

    def append(self, records: list[dict]) -> None:
        self._log.append(records)


def responses_file(root: Path, model: str) -> Path:
    return model_file(Path(root) / "responses", model)


def scores_file(root: Path, scorer: str, model: str) -> Path:
    return model_file(Path(root) / "scores" / scorer, model)


def errors_file(root: Path) -> Path:
    return Path(root) / "errors.jsonl"
