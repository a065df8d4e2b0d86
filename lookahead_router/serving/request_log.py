"""The proxy's request log: one SQLite row per chat request, written by a background thread so that
the event loop never waits on the disk.

Columns: time, request id, prompt hash (sha256) and length, the prompt itself (unless
``log_prompts: false``), requested and chosen model, router scores, cost weight, failed attempts,
final status and its cause (``ok``, a rejection's error code, ``upstream_unavailable``,
``upstream_failed_mid_stream``, ``client_aborted_before_first_byte`` / ``..._after_first_byte``,
...), error, stream flag, latency, router latency and time to first byte. A log written by an
older version gains the new columns when the proxy opens it; its rows are kept.
``export_prompts`` turns the log into a prompts file for `lookahead route` and data collection.
"""

from __future__ import annotations

import hashlib
import json
import queue
import sqlite3
import threading
import time
from pathlib import Path

COLUMNS = {
    "time": "REAL", "request_id": "TEXT", "prompt_sha256": "TEXT", "prompt_chars": "INTEGER",
    "prompt": "TEXT", "requested_model": "TEXT", "chosen_model": "TEXT", "scores": "TEXT",
    "cost_weight": "REAL", "attempts": "TEXT", "fallbacks": "INTEGER", "status": "INTEGER",
    "cause": "TEXT", "error": "TEXT", "stream": "INTEGER", "latency_ms": "REAL", "router_ms": "REAL",
    "first_byte_ms": "REAL",
}
_STOP = object()


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


class RequestLog:
    def __init__(self, path: str | Path, log_prompts: bool = True):
        self.path, self.log_prompts = Path(path), log_prompts
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(self.path) as db:  # fail at start-up, not on the first request
            db.execute(f"CREATE TABLE IF NOT EXISTS requests "
                       f"({', '.join(f'{k} {t}' for k, t in COLUMNS.items())})")
            present = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
            for name, kind in COLUMNS.items():
                if name not in present:
                    db.execute(f"ALTER TABLE requests ADD COLUMN {name} {kind}")
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._write_forever, name="request-log", daemon=True)
        self._thread.start()

    def record(self, entry: dict) -> None:
        entry = dict(entry)
        prompt = entry.pop("prompt", None)
        if prompt is not None:
            entry["prompt_sha256"], entry["prompt_chars"] = prompt_hash(prompt), len(prompt)
            if self.log_prompts:
                entry["prompt"] = prompt
        for key in ("scores", "attempts"):
            if entry.get(key) is not None:
                entry[key] = json.dumps(entry[key])
        unknown = set(entry) - set(COLUMNS)
        assert not unknown, unknown
        self._queue.put(entry)

    def _write_forever(self) -> None:
        db = sqlite3.connect(self.path)
        db.execute("PRAGMA journal_mode=WAL")
        # In WAL mode, NORMAL syncs at checkpoints rather than at every commit: the file can never
        # be corrupted, and a power cut (not a crash of the proxy) may lose the last rows. With
        # FULL, the commits were a visible share of the proxy's CPU profile under load.
        db.execute("PRAGMA synchronous=NORMAL")
        names = list(COLUMNS)
        sql = f"INSERT INTO requests ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        while True:
            batch = [self._queue.get()]
            time.sleep(0.02)  # let a burst gather: one commit for it
            while not self._queue.empty() and len(batch) < 512:
                batch.append(self._queue.get_nowait())
            rows = [[e.get(k) for k in names] for e in batch if e is not _STOP]
            if rows:
                db.executemany(sql, rows)
                db.commit()
            for _ in batch:
                self._queue.task_done()
            if any(e is _STOP for e in batch):
                db.close()
                return

    def flush(self) -> None:
        """Wait until every recorded row is in the file."""
        self._queue.join()

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()


def export_prompts(db_path: str | Path, out_path: str | Path) -> int:
    """Write the distinct logged prompts as JSONL ``{"id": <sha256>, "prompt": ...}``, oldest
    first (the format `lookahead route --input` reads). Returns the number written."""
    db_path = Path(db_path)
    if not db_path.is_file():
        raise ValueError(f"{db_path}: no such request log")
    with sqlite3.connect(db_path) as db:
        try:
            rows = db.execute("SELECT prompt_sha256, prompt FROM requests WHERE prompt IS NOT NULL "
                              "GROUP BY prompt_sha256 ORDER BY MIN(time)").fetchall()
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{db_path}: not a Lookahead request log ({exc})") from exc
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(out_path.suffix + ".part")
    with tmp.open("w", encoding="utf-8") as fh:
        for sha, prompt in rows:
            fh.write(json.dumps({"id": sha, "prompt": prompt}, ensure_ascii=False) + "\n")
    tmp.replace(out_path)
    return len(rows)
