"""Replicas over one PostgreSQL request log, under faults, with real processes: `lookahead serve`
replicas and `--workers 2`, a fake upstream streaming slowly, and streaming clients.

- kill -9 one of two replicas under load: the other's clients see no error, and every request a
  client saw complete is logged exactly once (the survivor ships the dead one's spool);
- stop PostgreSQL under load and start it again: no client sees an error, the rows that waited
  land after the restart, none twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lookahead_router.routers.registry import make_router
from lookahead_router.serving.fake_upstream import free_port, stop, wait_until_serving
from postgres_server import query
from test_training import topic_dataset

BIN = Path(sys.executable).parent
PROMPTS = ["solve the equation 3 x + 1 = 7", "write a python function that sorts a list"]


@pytest.fixture(scope="module")
def upstream():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lookahead_router.serving.fake_upstream", "--port", str(port),
                             "--chunks", "8", "--chunk-delay-ms", "25"])
    wait_until_serving(f"http://127.0.0.1:{port}/docs", proc)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def router_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("replica-router") / "router"
    make_router("knn", backbone="tiny-bert", max_length=32, progress=False).fit(topic_dataset()).save(path)
    return path


def serve(tmp_path: Path, upstream: str, router_dir: Path, database: str, workers: int = 1):
    """A `lookahead serve` process logging to ``database``; the spool folder is shared."""
    candidates = json.loads((router_dir / "router.json").read_text())["candidates"]
    config = tmp_path / "models.yaml"
    config.write_text(json.dumps({
        "models": {c: {"base_url": f"{upstream}/v1", "model": f"up-{c}", "timeout_s": 30} for c in candidates},
        "request_log": database, "request_log_spool": str(tmp_path / "spool")}))
    port = free_port()
    proc = subprocess.Popen([str(BIN / "lookahead"), "serve", "--config", str(config), "--router", str(router_dir),
                             "--port", str(port), "--workers", str(workers), "--engine", "torch"],
                            stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wait_until_serving(f"http://127.0.0.1:{port}/health", proc)
    return proc, f"http://127.0.0.1:{port}"


async def drive(urls: dict[str, str], clients: int, seconds: float, events: list) -> list[dict]:
    """``clients`` streaming clients per named URL for ``seconds``; ``events``: (at second, callable)
    run while they stream. One dict per request sent: which URL, its id, and whether it completed."""
    results, stop = [], time.monotonic() + seconds

    async def client(name: str, url: str, n: int):
        async with httpx.AsyncClient(timeout=30) as c:
            i = n
            while time.monotonic() < stop:
                i += 1
                result = {"url": name, "id": None, "completed": False, "error": None}
                results.append(result)
                body = {"model": "lookahead", "stream": True,
                        "messages": [{"role": "user", "content": f"{PROMPTS[i % 2]} #{n}-{i}"}]}
                try:
                    async with c.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
                        result["id"] = response.headers.get("x-request-id")
                        if response.status_code != 200:
                            result["error"] = f"HTTP {response.status_code}"
                            await asyncio.sleep(0.05)
                            continue
                        async for line in response.aiter_lines():
                            result["completed"] |= line == "data: [DONE]"
                    if not result["completed"]:
                        result["error"] = "stream without [DONE]"
                except httpx.HTTPError as exc:
                    result["error"] = type(exc).__name__
                    await asyncio.sleep(0.05)

    async def timeline():
        began = time.monotonic()
        for at, action in events:
            await asyncio.sleep(max(0.0, began + at - time.monotonic()))
            await asyncio.to_thread(action)

    await asyncio.gather(timeline(), *(client(name, url, n) for name, url in urls.items() for n in range(clients)))
    return results


def logged(database: str, ids: set[str], seconds: float = 40) -> dict[str, int]:
    """How many times each of ``ids`` is in the log, once all have landed or ``seconds`` passed."""
    deadline = time.monotonic() + seconds
    while True:
        counts = dict(query(database, "SELECT request_id, COUNT(*) FROM requests GROUP BY request_id"))
        if ids <= set(counts) or time.monotonic() > deadline:
            return counts
        time.sleep(0.5)


def test_kill_9_one_replica_under_load(postgres, upstream, router_dir, tmp_path):
    database = postgres.new_database()
    (a, url_a), (b, url_b) = (serve(tmp_path, upstream, router_dir, database) for _ in range(2))
    try:
        results = asyncio.run(drive({"a": url_a, "b": url_b}, clients=4, seconds=8,
                                    events=[(3.0, lambda: os.kill(a.pid, signal.SIGKILL))]))
        completed = {r["id"] for r in results if r["completed"]}
        counts = logged(database, completed)
    finally:
        for proc in (a, b):
            stop(proc)
    on_b = [r for r in results if r["url"] == "b"]
    on_a = [r for r in results if r["url"] == "a"]
    report = {"sent": len(results), "completed": len(completed),
              "logged": len(completed & set(counts)), "lost": len(completed - set(counts)),
              "duplicated": sum(1 for n in counts.values() if n > 1),
              "b_sent": len(on_b), "b_errors": sum(r["error"] is not None for r in on_b),
              "a_completed": sum(r["completed"] for r in on_a), "a_failed": sum(r["error"] is not None for r in on_a)}
    print("kill -9 one replica:", json.dumps(report))
    assert report["b_sent"] > 20 and report["b_errors"] == 0          # the other replica's clients
    assert report["a_completed"] > 0 and report["a_failed"] > 0        # a really died under load
    assert report["lost"] == 0 and report["duplicated"] == 0


def test_postgres_restart_under_load_with_two_workers(postgres, upstream, router_dir, tmp_path):
    database = postgres.new_database()
    proc, url = serve(tmp_path, upstream, router_dir, database, workers=2)
    try:
        results = asyncio.run(drive({"proxy": url}, clients=6, seconds=9,
                                    events=[(2.0, postgres.stop), (5.0, postgres.start)]))
        completed = {r["id"] for r in results if r["completed"]}
        counts = logged(database, completed)
        replicas = query(database, "SELECT COUNT(DISTINCT replica) FROM requests")[0][0]
    finally:
        stop(proc)
        if not Path(postgres.data, "postmaster.pid").exists():
            postgres.start()
    report = {"sent": len(results), "completed": len(completed), "errors": sum(r["error"] is not None for r in results),
              "logged": len(completed & set(counts)), "lost": len(completed - set(counts)),
              "duplicated": sum(1 for n in counts.values() if n > 1), "replicas_logging": replicas}
    print("PostgreSQL restart:", json.dumps(report))
    assert report["errors"] == 0 and report["completed"] == report["sent"] > 30
    assert report["lost"] == 0 and report["duplicated"] == 0


def test_the_deploy_folder_is_consistent():
    """deploy/ cannot be run here (no container engine): its config loads, names a PostgreSQL log,
    and the replicas' command uses only options `lookahead serve` has."""
    import yaml
    from typer.testing import CliRunner

    from lookahead_router.cli.main import app
    from lookahead_router.catalogue import load_config
    root = Path(__file__).parent.parent / "deploy"
    compose = yaml.safe_load((root / "compose.yaml").read_text())
    config = load_config(root / "models.yaml")
    assert config.request_log.startswith("postgresql://") and str(config.request_log_spool) == "/spool"
    command = compose["x-proxy"]["command"]
    assert command[0] == "serve"
    help_text = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200).output
    assert all(flag in help_text for flag in command if flag.startswith("--"))
    for name in ("proxy-1", "proxy-2"):
        assert compose["services"][name]["command"] == command and "/spool" in str(compose["services"][name])
    assert "proxy-1:8000" in (root / "nginx.conf").read_text() and "proxy-2:8000" in (root / "nginx.conf").read_text()
