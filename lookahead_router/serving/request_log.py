"""The proxy's request log: one row per chat request, in SQLite or in a PostgreSQL database that
every replica shares (``log_stores.py``).

Columns: time, request id, prompt hash (sha256) and length, the prompt itself (unless
``log_prompts: false``), requested and chosen model, router scores, cost weight, failed attempts,
final status and its cause (``ok``, a rejection's error code, ``upstream_unavailable``,
``upstream_failed_mid_stream``, ``client_aborted_before_first_byte`` / ``..._after_first_byte``,
...), error, stream flag, latency, router latency, time to first byte, the replica that served
it, and the upstream's token counts and their cost in USD (``usage.py``; NULL when unknown).
``export_prompts`` turns the log into a prompts file for `lookahead route` and data collection.

A response never waits for the database: ``record`` appends the row to this process's spool file
(``spool.py``) and a background thread ships the spool to the store in batches. While the store is
unreachable the rows wait in the spool (bounded by ``buffer_bytes``; past it new rows are dropped
and counted), the thread retries with backoff, and the proxy keeps serving. ``/metrics`` shows
rows written, waiting, dropped and failed writes, and whether the store is up (``metrics.py``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Optional

import orjson

from lookahead_router.serving.log_stores import (COLUMNS, NAMES, LogStoreError, PostgresStore, SQLiteStore,
                                                 is_postgres, open_store, redacted, sqlite_path)
from lookahead_router.serving.metrics import ProxyMetrics
from lookahead_router.serving.spool import Spool

logger = logging.getLogger("lookahead_router.serving")
_JSON_COLUMNS = ("scores", "attempts")
_BATCH_ROWS = 1000
_ADOPT_EVERY_S = 10.0


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def default_spool_dir(url: str) -> Path:
    """Next to a SQLite file; for a database, under the cache folder, one per database (so
    replicas on one host sharing it can take over each other's spools)."""
    if not is_postgres(url):
        path = sqlite_path(url)
        return path.with_name(path.name + ".spool")
    from lookahead_router.cache import cache_root
    safe = "".join(c if c.isalnum() else "_" for c in redacted(url).split("://", 1)[1].replace(":***", ""))
    return cache_root() / "request-log-spool" / safe


class RequestLog:
    def __init__(self, url: str | Path, log_prompts: bool = True, spool_dir: Optional[Path] = None,
                 buffer_bytes: int = 256 << 20, metrics: Optional[ProxyMetrics] = None):
        self.url, self.log_prompts, self.buffer_bytes = str(url), log_prompts, buffer_bytes
        self.metrics = metrics or ProxyMetrics()  # the proxy's, so that /metrics shows the log
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self.store = open_store(self.url)  # fails at start-up, not on the first request
        self.metrics.log_up.set(1)
        self.spool_dir = Path(spool_dir) if spool_dir else default_spool_dir(self.url)
        self.spool = Spool.create(self.spool_dir)
        self.adopted: list[Spool] = []
        self.pending_rows = 0       # appended, not yet stored (ours)
        self.store_up = True
        self._wake, self._stop, self._idle = threading.Event(), threading.Event(), threading.Condition()
        self._thread = threading.Thread(target=self._ship_forever, name="request-log", daemon=True)
        self._thread.start()

    # ---- the event loop's side ---------------------------------------------------------------
    def record(self, entry: dict) -> None:
        entry = dict(entry)
        prompt = entry.pop("prompt", None)
        if prompt is not None:
            entry["prompt_sha256"], entry["prompt_chars"] = prompt_hash(prompt), len(prompt)
            if self.log_prompts:
                entry["prompt"] = prompt
        entry.setdefault("replica", self.replica)
        unknown = set(entry) - set(COLUMNS)
        assert not unknown, unknown
        if self.spool.pending_bytes > self.buffer_bytes:
            self.metrics.log_dropped.inc()
            return
        self.spool.append(orjson.dumps(entry) + b"\n")
        with self._idle:
            self.pending_rows += 1
        self.metrics.log_pending.set(self.pending_rows)
        self._wake.set()

    # ---- the shipping thread -------------------------------------------------------------------
    def _ship_forever(self) -> None:
        backoff, next_adopt = 0.5, 0.0
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            time.sleep(0.02)  # let a burst gather: one transaction for it
            if time.monotonic() >= next_adopt:
                self._adopt_orphans()
                next_adopt = time.monotonic() + _ADOPT_EVERY_S
            if self._ship_all():
                backoff = 0.5
            else:  # the store is down: try again later, the rows stay in the spool
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                self._wake.set()

    def _ship_all(self) -> bool:
        """Ship everything waiting (adopted spools first: they are older). False on a failure."""
        for spool in list(self.adopted):
            if not self._ship(spool):
                return False
            spool.remove()
            self.adopted.remove(spool)
        return self._ship(self.spool)

    def _ship(self, spool: Spool) -> bool:
        while True:
            lines, nbytes = spool.read(_BATCH_ROWS)
            if not lines:
                return True
            rows = [_row(orjson.loads(line)) for line in lines]
            try:
                self.store.write(rows)
            except Exception as exc:  # noqa: BLE001  (any store failure: keep the rows, retry)
                self.metrics.log_failures.inc()
                if self.store_up:
                    logger.warning("request log %s: write failed (%s); rows wait in %s and are retried",
                                   redacted(self.url), str(exc).strip().splitlines()[0] if str(exc) else
                                   type(exc).__name__, self.spool_dir)
                self.store_up = False
                self.metrics.log_up.set(0)
                return False
            if not self.store_up:
                logger.warning("request log %s: writing again", redacted(self.url))
            self.store_up = True
            self.metrics.log_up.set(1)
            spool.shipped(nbytes)
            self.metrics.log_written.inc(len(rows))
            if spool is self.spool:
                with self._idle:
                    self.pending_rows -= len(rows)
                    self._idle.notify_all()
                self.metrics.log_pending.set(self.pending_rows)

    def _adopt_orphans(self) -> None:
        mine = {self.spool.path, *(s.path for s in self.adopted)}
        for spool in Spool.orphans(self.spool_dir, mine):
            if spool.torn_tail():
                logger.warning("request log: %s ends in a cut-off row, which is skipped", spool.path)
            if spool.pending_bytes > 0:
                logger.info("request log: shipping the rows of a stopped process (%s)", spool.path.name)
            self.adopted.append(spool)

    # ---- control -----------------------------------------------------------------------------
    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every row recorded here is in the store (or ``timeout`` passes)."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._idle:
            while self.pending_rows > 0 and time.monotonic() < deadline:
                self._idle.wait(timeout=0.1)

    def close(self, timeout: float = 10.0) -> None:
        """Ship what is waiting (for up to ``timeout``), then stop. Rows that could not be stored stay
        in the spool file, for the next process to ship."""
        self.flush(timeout)
        self._stop.set()
        self._wake.set()
        self._thread.join()
        for spool in [self.spool, *self.adopted]:
            if spool.pending_bytes == 0:
                spool.remove()
            else:
                spool.close()
        self.store.close()


def _row(entry: dict) -> list:
    for key in _JSON_COLUMNS:
        if entry.get(key) is not None:
            entry[key] = orjson.dumps(entry[key]).decode()
    return [entry.get(k) for k in NAMES]


def export_prompts(url: str | Path, out_path: str | Path) -> int:
    """Write the distinct logged prompts as JSONL ``{"id": <sha256>, "prompt": ...}``, oldest
    first (the format `lookahead route --prompts` reads), from a SQLite file or a PostgreSQL URL.
    Returns the number written."""
    url = str(url)
    store = PostgresStore(url, create=False) if is_postgres(url) else SQLiteStore(sqlite_path(url), create=False)
    try:
        rows = store.prompts()
    finally:
        store.close()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(out_path.suffix + ".part")
    with tmp.open("w", encoding="utf-8") as fh:
        for sha, prompt in rows:
            fh.write(orjson.dumps({"id": sha, "prompt": prompt}).decode() + "\n")
    tmp.replace(out_path)
    return len(rows)


__all__ = ["COLUMNS", "LogStoreError", "RequestLog", "export_prompts", "prompt_hash"]
