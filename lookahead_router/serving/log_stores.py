"""Where the request log's rows end up: a SQLite file (the embedded default) or a PostgreSQL
database shared by every replica. Both stores keep one table, ``requests`` (columns:
``request_log.COLUMNS``), with a unique ``request_id``, so a row delivered twice is stored once.
Both also keep a one-row table ``lookahead_schema`` with the layout's version. A log written by an
older version is migrated when a proxy opens it: new columns are added and its rows are kept.

    request_log: runs/requests.sqlite                       # a path: SQLite
    request_log: sqlite:///runs/requests.sqlite             # the same, as a URL
    request_log: postgresql://lookahead@db:5432/lookahead   # PostgreSQL (libpq URL; PGPASSWORD etc. apply)
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Iterable, Sequence

from lookahead_router.catalogue import is_postgres, sqlite_path
from lookahead_router.errors import LookaheadError

# 1: the SQLite layout before versions; 2: unique request_id, the version table; 3: prompt_tokens,
# completion_tokens, cost_usd.
SCHEMA_VERSION = 3

# Column -> (SQLite type, PostgreSQL type).
COLUMNS = {
    "time": ("REAL", "DOUBLE PRECISION"), "request_id": ("TEXT", "TEXT"),
    "prompt_sha256": ("TEXT", "TEXT"), "prompt_chars": ("INTEGER", "INTEGER"), "prompt": ("TEXT", "TEXT"),
    "requested_model": ("TEXT", "TEXT"), "chosen_model": ("TEXT", "TEXT"), "scores": ("TEXT", "JSONB"),
    "cost_weight": ("REAL", "DOUBLE PRECISION"), "attempts": ("TEXT", "JSONB"), "fallbacks": ("INTEGER", "INTEGER"),
    "status": ("INTEGER", "INTEGER"), "cause": ("TEXT", "TEXT"), "error": ("TEXT", "TEXT"),
    "stream": ("INTEGER", "INTEGER"), "latency_ms": ("REAL", "DOUBLE PRECISION"),
    "router_ms": ("REAL", "DOUBLE PRECISION"), "first_byte_ms": ("REAL", "DOUBLE PRECISION"),
    "replica": ("TEXT", "TEXT"), "prompt_tokens": ("INTEGER", "INTEGER"),
    "completion_tokens": ("INTEGER", "INTEGER"), "cost_usd": ("REAL", "DOUBLE PRECISION"),
}
NAMES = list(COLUMNS)
# The distinct logged prompts, oldest first (``lookahead log export``).
_PROMPTS_SQL = ("SELECT prompt_sha256, MIN(prompt) FROM requests WHERE prompt IS NOT NULL "
                "GROUP BY prompt_sha256 ORDER BY MIN(time)")


class LogStoreError(LookaheadError):
    """The request log's database cannot be opened or is not a request log."""


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def open_store(url: str | Path):
    return PostgresStore(str(url)) if is_postgres(str(url)) else SQLiteStore(sqlite_path(url))


class SQLiteStore:
    def __init__(self, path: Path, create: bool = True):
        self.path = path
        if not create and not path.is_file():
            raise LogStoreError(f"{path}: no such request log")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(path, check_same_thread=False)  # the shipping thread writes
            if create:
                self._migrate()
                self.db.execute("PRAGMA journal_mode=WAL")
                # In WAL mode, NORMAL syncs at checkpoints rather than at every commit: the file
                # can never be corrupted, and a power cut (not a crash of the proxy) may lose the
                # last rows. With FULL, commits were a visible share of the proxy's CPU under load.
                self.db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            raise LogStoreError(f"{path}: not a Lookahead request log ({exc})") from exc
        marks = ", ".join("?" * len(NAMES))
        self.insert = f"INSERT OR IGNORE INTO requests ({', '.join(NAMES)}) VALUES ({marks})"

    def _migrate(self) -> None:
        with self.db:
            self.db.execute(f"CREATE TABLE IF NOT EXISTS requests "
                            f"({', '.join(f'{k} {t}' for k, (t, _) in COLUMNS.items())})")
            present = {row[1] for row in self.db.execute("PRAGMA table_info(requests)")}
            for name, (kind, _) in COLUMNS.items():
                if name not in present:
                    self.db.execute(f"ALTER TABLE requests ADD COLUMN {name} {kind}")
            self.db.execute("CREATE UNIQUE INDEX IF NOT EXISTS requests_request_id ON requests (request_id)")
            self.db.execute("CREATE TABLE IF NOT EXISTS lookahead_schema (version INTEGER NOT NULL)")
            self.db.execute("DELETE FROM lookahead_schema")
            self.db.execute("INSERT INTO lookahead_schema VALUES (?)", (SCHEMA_VERSION,))

    def write(self, rows: Sequence[Sequence]) -> None:
        with self.db:
            self.db.executemany(self.insert, rows)

    def prompts(self) -> Iterable[tuple[str, str]]:
        try:
            return self.db.execute(_PROMPTS_SQL).fetchall()
        except sqlite3.DatabaseError as exc:
            raise LogStoreError(f"{self.path}: not a Lookahead request log ({exc})") from exc

    def close(self) -> None:
        self.db.close()


class PostgresStore:
    """One connection, used by the shipping thread only; after a failure it is opened again on the
    next write, so the log recovers by itself when the server comes back."""

    def __init__(self, url: str, create: bool = True, connect_timeout_s: int = 5):
        self.url, self.connect_timeout_s = url, connect_timeout_s
        self.conn = None
        marks = ", ".join("%s::jsonb" if COLUMNS[n][1] == "JSONB" else "%s" for n in NAMES)
        self.insert = (f"INSERT INTO requests ({', '.join(NAMES)}) VALUES ({marks}) "
                       f"ON CONFLICT (request_id) DO NOTHING")
        import psycopg
        self.errors = (psycopg.Error,)
        try:
            self._connect()
            if create:
                self._migrate()
        except psycopg.Error as exc:
            raise LogStoreError(f"request_log: cannot open {redacted(url)}: {str(exc).strip()}") from exc

    def _connect(self):
        if self.conn is None or self.conn.closed:
            import psycopg
            self.conn = psycopg.connect(self.url, connect_timeout=self.connect_timeout_s,
                                        application_name="lookahead-router")
        return self.conn

    def _migrate(self) -> None:
        conn = self._connect()
        with conn.transaction():
            # Replicas starting together: one migrates, the others wait for it.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('lookahead_router.request_log'))")
            conn.execute(f"CREATE TABLE IF NOT EXISTS requests "
                         f"({', '.join(f'{k} {t}' for k, (_, t) in COLUMNS.items())})")
            for name, (_, kind) in COLUMNS.items():
                conn.execute(f"ALTER TABLE requests ADD COLUMN IF NOT EXISTS {name} {kind}")
            conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS requests_request_id ON requests (request_id)")
            conn.execute("CREATE INDEX IF NOT EXISTS requests_time ON requests (time)")
            conn.execute("CREATE TABLE IF NOT EXISTS lookahead_schema (version INTEGER NOT NULL)")
            conn.execute("DELETE FROM lookahead_schema")
            conn.execute("INSERT INTO lookahead_schema VALUES (%s)", (SCHEMA_VERSION,))

    def write(self, rows: Sequence[Sequence]) -> None:
        try:
            conn = self._connect()
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(self.insert, rows)
        except self.errors:
            self.close()  # open a fresh connection on the next try
            raise

    def prompts(self) -> Iterable[tuple[str, str]]:
        try:
            return self._connect().execute(_PROMPTS_SQL).fetchall()
        except self.errors as exc:
            raise LogStoreError(f"{redacted(self.url)}: cannot read the request log: {str(exc).strip()}") from exc

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except self.errors:
                pass
            self.conn = None
