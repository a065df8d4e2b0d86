"""The request log on both stores (SQLite, a real PostgreSQL): rows land once, wait in the spool
while the store fails, a dead process's spool is shipped by another, schemas migrate, and
`lookahead log export` reads either."""

from __future__ import annotations

import sqlite3
import time

import orjson

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lookahead_router.serving.log_stores import SCHEMA_VERSION, SQLiteStore
from lookahead_router.serving.metrics import ProxyMetrics
from lookahead_router.serving.request_log import RequestLog, export_prompts
from lookahead_router.serving.spool import Spool
from postgres_server import query


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "log.sqlite")
    return request.getfixturevalue("postgres").new_database()


def rows(url: str) -> list[tuple]:
    sql = "SELECT request_id, status, prompt FROM requests ORDER BY request_id"
    if url.startswith("postgresql://"):
        return query(url, sql)
    with sqlite3.connect(url) as db:
        return db.execute(sql).fetchall()


def entry(i: int, **extra) -> dict:
    return {"request_id": f"r{i:03d}", "time": float(i), "prompt": f"prompt {i % 3}", "status": 200,
            "scores": {"A": 0.25}, "attempts": [{"model": "B", "error": "timeout"}], **extra}


def sample(metrics: ProxyMetrics, name: str) -> float:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name == name:
                return s.value
    raise KeyError(name)


def test_rows_land_once_with_their_version_and_export_reads_them(store_url, tmp_path):
    log = RequestLog(store_url, spool_dir=tmp_path / "spool")
    for i in range(30):
        log.record(entry(i))
    log.close()
    assert rows(store_url) == [(f"r{i:03d}", 200, f"prompt {i % 3}") for i in range(30)]
    version_sql = "SELECT version FROM lookahead_schema"
    version = query(store_url, version_sql) if store_url.startswith("postgresql") else \
        sqlite3.connect(store_url).execute(version_sql).fetchall()
    assert version == [(SCHEMA_VERSION,)]
    assert not list((tmp_path / "spool").iterdir())  # everything shipped: the spool is removed
    assert export_prompts(store_url, tmp_path / "prompts.jsonl") == 3
    # The same rows delivered again (a spool re-shipped after a crash) are stored once.
    again = RequestLog(store_url, spool_dir=tmp_path / "spool")
    for i in range(30):
        again.record(entry(i, status=500))
    again.close()
    assert len(rows(store_url)) == 30 and {r[1] for r in rows(store_url)} == {200}


def test_rows_wait_in_the_spool_while_the_store_fails_then_land_once(tmp_path, monkeypatch):
    metrics = ProxyMetrics()
    url = str(tmp_path / "log.sqlite")
    log = RequestLog(url, spool_dir=tmp_path / "spool", metrics=metrics)
    real_write, failing = SQLiteStore.write, [True]

    def write(self, batch):
        if failing[0]:
            raise sqlite3.OperationalError("database is locked")
        real_write(self, batch)
    monkeypatch.setattr(SQLiteStore, "write", write)
    for i in range(20):
        log.record(entry(i))
    log.flush(timeout=1.5)
    assert rows(url) == [] and log.pending_rows == 20
    assert sample(metrics, "lookahead_request_log_up") == 0
    assert sample(metrics, "lookahead_request_log_write_failures_total") >= 1
    assert sample(metrics, "lookahead_request_log_rows_waiting") == 20
    failing[0] = False
    log.flush(timeout=20)
    assert len(rows(url)) == 20 and log.pending_rows == 0
    assert sample(metrics, "lookahead_request_log_up") == 1
    assert sample(metrics, "lookahead_request_log_rows_written_total") == 20
    log.close()


def test_a_full_spool_drops_new_rows_and_counts_them(tmp_path, monkeypatch):
    metrics = ProxyMetrics()
    monkeypatch.setattr(SQLiteStore, "write", lambda self, batch: (_ for _ in ()).throw(
        sqlite3.OperationalError("disk I/O error")))
    log = RequestLog(str(tmp_path / "log.sqlite"), spool_dir=tmp_path / "spool", buffer_bytes=2000,
                     metrics=metrics)
    for i in range(40):
        log.record(entry(i))
    kept = log.pending_rows
    assert 0 < kept < 40 and sample(metrics, "lookahead_request_log_rows_dropped_total") == 40 - kept
    log.close(timeout=0.5)
    assert len(list((tmp_path / "spool").glob("*.jsonl"))) == 1  # what was kept stays for the next start


def test_a_dead_processes_spool_is_shipped_by_another(store_url, tmp_path):
    """A process killed mid-run leaves its spool unlocked, maybe with a cut-off last line: the next
    log opened on the same folder ships its whole rows once and deletes it."""
    spool_dir = tmp_path / "spool"
    dead = Spool.create(spool_dir)
    for i in range(10):
        dead.append(orjson.dumps(entry(i)) + b"\n")
    dead.append(b'{"request_id": "torn", "sta')  # killed mid-write
    dead.close()  # its lock is released, as the kernel does for a killed process
    log = RequestLog(store_url, spool_dir=spool_dir)
    deadline = time.monotonic() + 20
    while len(rows(store_url)) < 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    log.close()
    assert [r[0] for r in rows(store_url)] == [f"r{i:03d}" for i in range(10)]
    assert not list(spool_dir.iterdir())


def test_an_older_postgres_table_gains_the_new_columns_and_keeps_its_rows(postgres, tmp_path):
    url = postgres.new_database()
    import psycopg
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE requests (time DOUBLE PRECISION, request_id TEXT, status INTEGER)")
        conn.execute("INSERT INTO requests VALUES (1.0, 'old', 200)")
    log = RequestLog(url, spool_dir=tmp_path / "spool")
    log.record({"request_id": "new", "time": 2.0, "status": 499, "cause": "client_aborted_after_first_byte"})
    log.close()
    assert query(url, "SELECT request_id, status, cause FROM requests ORDER BY time") == [
        ("old", 200, None), ("new", 499, "client_aborted_after_first_byte")]


def test_an_unreachable_database_fails_at_start_up_without_its_password(tmp_path):
    from lookahead_router.serving.log_stores import LogStoreError
    with pytest.raises(LogStoreError, match=r"cannot open postgresql://u:\*\*\*@127.0.0.1:1/db") as info:
        RequestLog("postgresql://u:secret@127.0.0.1:1/db", spool_dir=tmp_path / "spool")
    assert "secret" not in str(info.value)


def test_a_version_2_log_gains_the_token_columns_and_keeps_its_rows(store_url, tmp_path):
    """The layout before tokens and cost (version 2), on either store, migrated in place."""
    from lookahead_router.serving.log_stores import COLUMNS
    new = ("prompt_tokens", "completion_tokens", "cost_usd")
    postgres = store_url.startswith("postgresql://")
    v2 = ", ".join(f"{name} {types[postgres]}" for name, types in COLUMNS.items() if name not in new)
    statements = [f"CREATE TABLE requests ({v2})", "CREATE UNIQUE INDEX requests_request_id ON requests (request_id)",
                  "CREATE TABLE lookahead_schema (version INTEGER NOT NULL)", "INSERT INTO lookahead_schema VALUES (2)",
                  "INSERT INTO requests (request_id, time, status) VALUES ('old', 0.5, 200)"]
    if postgres:
        import psycopg
        with psycopg.connect(store_url) as conn:
            for sql in statements:
                conn.execute(sql)
    else:
        with sqlite3.connect(store_url) as db:
            for sql in statements:
                db.execute(sql)
    log = RequestLog(store_url, spool_dir=tmp_path / "spool")
    log.record(entry(1, prompt_tokens=12, completion_tokens=30, cost_usd=0.25))
    log.close()
    sql = "SELECT request_id, status, prompt_tokens, completion_tokens, cost_usd FROM requests ORDER BY time"
    read = query if postgres else (lambda url, q: sqlite3.connect(url).execute(q).fetchall())
    assert read(store_url, sql) == [("old", 200, None, None, None), ("r001", 200, 12, 30, 0.25)]
    assert read(store_url, "SELECT version FROM lookahead_schema") == [(SCHEMA_VERSION,)] == [(3,)]
