"""The collection folder and its append-only JSON Lines files.

    DIR/responses/<model>.jsonl         one generated response per line    (collect generate)
    DIR/errors.jsonl                    pairs that failed after every retry (collect generate)
    DIR/scores/<scorer>/<model>.jsonl   one score per line                  (collect score)

Every line carries ``id``. Lines are appended and synced as they are produced, so a crash loses at
most the line being written; on the next run a torn last line is dropped and only missing ids are
done again, so nothing is ever done twice and nothing already written is lost.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path


class StoreError(ValueError):
    """A collection file is malformed; the message names the file and line."""


def model_file(folder: Path, model: str) -> Path:
    """``folder/<model>.jsonl``, with characters a file name cannot hold replaced."""
    return Path(folder) / (re.sub(r"[^A-Za-z0-9._-]", "_", model) + ".jsonl")


class JsonlStore:
    """Records keyed by ``id`` in one JSON Lines file, resumable after a crash."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self, repair: bool = True) -> dict[str, dict]:
        """The complete records by id. A torn last line (no newline: a crash mid-write) is cut off
        the file when ``repair`` is set; a malformed complete line is an error."""
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        keep = data.rfind(b"\n") + 1
        records: dict[str, dict] = {}
        for lineno, raw in enumerate(data[:keep].split(b"\n")[:-1], 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise StoreError(f"{self.path}:{lineno}: not valid JSON ({exc})") from exc
            if not isinstance(row, dict) or "id" not in row:
                raise StoreError(f"{self.path}:{lineno}: a record needs an 'id'")
            records[str(row["id"])] = row  # a later line for the same id supersedes
        if repair and keep < len(data):
            with self.path.open("r+b") as fh:
                fh.truncate(keep)
        return records

    def append(self, records: list[dict]) -> None:
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            fh.flush()
            os.fsync(fh.fileno())


def responses_file(root: Path, model: str) -> Path:
    return model_file(Path(root) / "responses", model)


def scores_file(root: Path, scorer: str, model: str) -> Path:
    return model_file(Path(root) / "scores" / scorer, model)


def errors_file(root: Path) -> Path:
    return Path(root) / "errors.jsonl"
