"""Load benchmark of the routing proxy: C concurrent streaming clients for D seconds against fake
upstreams on loopback: straight at the upstream, through `lookahead serve` naming a candidate
(pass-through: the proxy's own overhead), through it with model "lookahead" (routed), and through
LiteLLM's proxy in front of the same upstream (the widely run peer). Ours runs twice: one process
logging to SQLite, then `--workers 2` logging to PostgreSQL (a throwaway server from Debian's
package, or --database), as replicas behind one port would. The router's own throughput, alone in
a process with every core, is measured too: routed throughput cannot exceed it.

The proxy runs a real router (kNN on the packaged MiniLM, fitted on a slice of the routing
dataset, unless --router names a saved one) and benchmark prompts. Reported: throughput, p50/p99
time to first byte and to the last byte, the latency each proxy adds (proxy minus direct, at the
same percentile), ours as a ratio of LiteLLM's, router inference on its own (from the proxy's
request log) and the error count (any non-200, transport error, stream without [DONE] or stream
carrying an error event).

    .venv/bin/python bench/proxy_load.py [--clients 200] [--seconds 60] [--data runs/paper.parquet]
        [--router DIR] [--chunks 16] [--chunk-delay-ms 10] [--out NAME]
        [--phases direct,pass-through,routed,pass-through-2w,routed-2w,litellm]
        [--litellm .venv-litellm/bin/litellm] [--engine auto|torch|onnx|onnx-int8] [--database URL]

Writes bench/results/<NAME>.json and .md (default NAME: proxy_load_<device>). Upstream, proxy
and clients share the machine, so on a small CPU they compete for it; the report says so. Each
server runs only during its own phases (ours for pass-through and routed, then LiteLLM), and each
phase starts after one unmeasured request.

LiteLLM (`make litellm-peer` installs the pinned `litellm[proxy]` into .venv-litellm: its pins
clash with ours) is started as `litellm --config <generated> --num_workers 1` on uvicorn with
uvloop and httptools, like ours (one process, keep-alive 75 s), mapping model "up-0" to
`openai/up-0` at the fake upstream. Made as light as its supported settings allow, as ours is: no
access log (a logging config without handlers for uvicorn.access), LITELLM_LOG=ERROR, no
callbacks, no database (so no spend or error logs; disable_spend_logs and disable_error_logs set
too), no retries, no background health checks, telemetry off (LITELLM_TELEMETRY_DISABLED), the
packaged model cost map (LITELLM_LOCAL_MODEL_COST_MAP: no fetch), and no master key
(dangerously_permit_weak_or_unset_master_key: our proxy runs without client keys as well). Its
in-process success handling (usage counted with tiktoken, as the fake upstream sends none, and a
cost) still runs: disable_streaming_logging and disable_token_counter, which LiteLLM marks as not
recommended, stay off (they saved little CPU when tried). Ours still writes each request to its
SQLite request log; LiteLLM writes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import importlib.metadata
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from lookahead_router.precision import environment

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent
PHASES = ("direct", "pass-through", "routed", "pass-through-2w", "routed-2w", "litellm")
OURS = {  # phase -> (workers, request log)
    "pass-through": (1, "sqlite"), "routed": (1, "sqlite"),
    "pass-through-2w": (2, "postgres"), "routed-2w": (2, "postgres"),
}
LITELLM = HERE.parent / ".venv-litellm" / "bin" / "litellm"  # `make litellm-peer`


async def load(url: str, model: str, prompts: list[str], clients: int, seconds: float) -> dict:
    """``clients`` workers, each streaming one request after another until time is up."""
    ttfb, total, errors, done = [], [], [], 0
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        async def worker(w: int):
            nonlocal done
            i = w
            while time.monotonic() < stop:
                body = {"model": model, "stream": True,
                        "messages": [{"role": "user", "content": prompts[i % len(prompts)]}]}
                i += clients
                start = time.perf_counter()
                first, finished, failed = None, False, False
                try:
                    async with client.stream("POST", url, json=body) as response:
                        if response.status_code != 200:
                            errors.append(f"HTTP {response.status_code}")
                            await response.aread()
                            continue
                        async for line in response.aiter_lines():
                            if first is None and line.startswith("data:"):
                                first = time.perf_counter() - start
                            if line == "data: [DONE]":
                                finished = True
                            elif _error_event(line):
                                failed = True
                except httpx.HTTPError as exc:
                    errors.append(type(exc).__name__)
                    continue
                if failed:
                    errors.append("error event")
                    continue
                if not finished:
                    errors.append("stream without [DONE]")
                    continue
                ttfb.append(first)
                total.append(time.perf_counter() - start)
                done += 1
        began = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        wall = time.perf_counter() - began
    return {"requests": done, "errors": len(errors), "error_kinds": sorted(set(errors)),
            "wall_s": wall, "throughput_rps": done / wall,
            "ttfb_ms": _percentiles(ttfb), "total_ms": _percentiles(total)}


def _error_event(line: str) -> bool:
    """An SSE line reporting a failure: ``event: error``, or data whose JSON has an "error" key."""
    if line.startswith("event:"):
        return line[6:].strip() == "error"
    if not line.startswith("data:") or '"error"' not in line:  # the cheap test first
        return False
    try:
        data = json.loads(line[5:])
    except ValueError:
        return False
    return isinstance(data, dict) and "error" in data


async def warm_up(url: str, model: str) -> None:
    """One unmeasured streamed request, so that no phase pays a server's first-request costs."""
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "warm-up"}]}
    async with httpx.AsyncClient(timeout=60) as client:
        async with client.stream("POST", url, json=body) as response:
            await response.aread()
            if response.status_code != 200:
                raise RuntimeError(f"warm-up request to {url}: HTTP {response.status_code}: "
                                   f"{response.text[:300]}")


def run_phase(label: str, url: str, model: str, prompts: list[str], args, processes: dict) -> dict:
    """One phase's load, with the CPU time each process (``processes``: name -> Popen; the load
    generator is added as "clients") spent on it, per request and in cores: where the time goes."""
    import psutil
    print(f"{label}: {args.clients} clients x {args.seconds:.0f} s ...", flush=True)
    asyncio.run(warm_up(url, model))
    watched = {name: psutil.Process(proc.pid) for name, proc in processes.items()}
    watched["clients"] = psutil.Process()

    def cpu(p):  # a server and its workers (`--workers N`); the load generator alone
        family = [p] if p.pid == os.getpid() else [p, *p.children(recursive=True)]
        return sum(sum(q.cpu_times()[:2]) for q in family)
    before = {name: cpu(p) for name, p in watched.items()}
    result = asyncio.run(load(url, model, prompts, args.clients, args.seconds))
    spent = {name: cpu(p) - before[name] for name, p in watched.items()}
    result["cpu"] = {name: {"ms_per_request": 1000 * s / max(result["requests"], 1),
                            "cores": s / result["wall_s"]} for name, s in spent.items()}
    return result


def _percentiles(seconds: list[float]) -> dict:
    if not seconds:
        return {"p50": float("nan"), "p99": float("nan")}
    ms = np.array(seconds) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


def build_router(data: Path, out: Path) -> Path:
    from lookahead_router.data.dataset import RoutingDataset
    from lookahead_router.routers.similarity import KNNRouter
    ds = RoutingDataset.load(data)
    rows = np.random.default_rng(0).choice(len(ds), size=min(400, len(ds)), replace=False)
    return KNNRouter(k=20).fit(ds.subset(np.sort(rows))).save(out)


def database(args, work: Path) -> str:
    """The 2-worker phases' request log: --database, else a throwaway PostgreSQL server (Debian's
    package; the tests' helper, tests/postgres_server.py)."""
    if args.database:
        return args.database
    sys.path.insert(0, str(HERE.parent / "tests"))
    from postgres_server import PostgresServer, server_bin
    if server_bin() is None:
        raise SystemExit("the 2-worker phases log to PostgreSQL: install it (apt-get install postgresql) "
                         "or pass --database postgresql://...")
    server = PostgresServer(server_bin())
    atexit.register(server.close)  # after the report has read the log
    return server.new_database()


def from_log(url: str, sql: str) -> list[tuple]:
    if url.startswith("postgresql"):
        import psycopg
        with psycopg.connect(url) as conn:
            return conn.execute(sql).fetchall()
    with sqlite3.connect(url) as db:
        return db.execute(sql).fetchall()


def router_throughput(router_dir: Path, engine: str, prompts: list[str], batch: int = 8, seconds: float = 20) -> dict:
    """The router alone, in a process of its own with every core and nothing else running, on the
    same prompts in batches of ``batch`` (about the proxy's): the ceiling of routed throughput."""
    script = f"""
import json, sys, time
from lookahead_router.routers.base import Router
router = Router.load({str(router_dir)!r}, engine={engine!r}, keep_cache=False); router.score(["warm-up"])
prompts = json.load(sys.stdin); done, began = 0, time.perf_counter()
while time.perf_counter() - began < {seconds}:
    router.score(prompts[done % len(prompts):][:{batch}]); done += {batch}
print(json.dumps({{"queries_per_s": done / (time.perf_counter() - began), "batch": {batch}}}))
"""
    out = subprocess.run([sys.executable, "-c", script], input=json.dumps(prompts), capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def start_litellm(exe: Path, up_port: int, port: int, work: Path) -> subprocess.Popen:
    """LiteLLM's proxy in front of the fake upstream, as light as it is configured (see the top)."""
    config = {
        "model_list": [{"model_name": "up-0", "litellm_params": {
            "model": "openai/up-0", "api_base": f"http://127.0.0.1:{up_port}/v1", "api_key": "none"}}],
        "litellm_settings": {"callbacks": [], "success_callback": [], "failure_callback": [],
                             "turn_off_message_logging": True, "num_retries": 0, "request_timeout": 30},
        "general_settings": {"disable_spend_logs": True, "disable_error_logs": True,
                             "background_health_checks": False,
                             "dangerously_permit_weak_or_unset_master_key": True},
    }
    (work / "litellm.yaml").write_text(json.dumps(config))  # JSON is YAML
    logging_config = {  # uvicorn's access logger without handlers: uvicorn then skips it
        "version": 1, "disable_existing_loggers": False,
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
        "loggers": {"uvicorn": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
                    "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False}}}
    (work / "litellm-logging.json").write_text(json.dumps(logging_config))
    env = {k: v for k, v in os.environ.items()  # no key, database or cache of the caller's
           if not k.startswith(("LITELLM_", "DATABASE_", "REDIS_"))}
    env.update(PYTHONUNBUFFERED="1", LITELLM_LOG="ERROR", LITELLM_TELEMETRY_DISABLED="true",
               LITELLM_LOCAL_MODEL_COST_MAP="True")
    with open(work / "litellm.log", "wb") as log:
        return subprocess.Popen([str(exe), "--config", str(work / "litellm.yaml"), "--host", "127.0.0.1",
                                 "--port", str(port), "--num_workers", "1", "--keepalive_timeout", "75",
                                 "--log_config", str(work / "litellm-logging.json")],
                                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)


def versions(litellm: Path | None) -> dict:
    ours = {f"ours_{name}": importlib.metadata.version(name) for name in ("uvicorn", "fastapi")}
    if litellm is None:
        return ours
    python = litellm.parent / "python"  # the peer's virtual environment
    script = "import importlib.metadata as m; print(*(m.version(n) for n in ('litellm', 'uvicorn')))"
    try:
        out = subprocess.run([str(python), "-c", script], capture_output=True, text=True,
                             check=True, timeout=60).stdout.split()
        return {**ours, "litellm": out[0], "litellm_uvicorn": out[1]}
    except (OSError, subprocess.SubprocessError, IndexError):
        return {**ours, "litellm": None, "litellm_uvicorn": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--data", type=Path, default=Path("runs/paper.parquet"))
    parser.add_argument("--router", type=Path, help="saved router (default: kNN fitted here)")
    parser.add_argument("--chunks", type=int, default=16, help="SSE chunks per fake answer")
    parser.add_argument("--chunk-delay-ms", type=float, default=10, help="fake upstream's pause per chunk")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated, among {', '.join(PHASES)} (direct is required)")
    parser.add_argument("--litellm", type=Path, default=LITELLM,
                        help="LiteLLM's executable (default: .venv-litellm's, `make litellm-peer`)")
    parser.add_argument("--engine", default="auto", help="`lookahead serve --engine`: what runs the router's "
                        "encoder")
    parser.add_argument("--database", help="PostgreSQL URL for the 2-worker phases' request log "
                        "(default: a throwaway server started here)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if unknown := sorted(set(phases) - set(PHASES)):
        parser.error(f"--phases: unknown {', '.join(unknown)} (known: {', '.join(PHASES)})")
    if "direct" not in phases:
        parser.error("--phases must include direct: the other phases are measured against it")
    litellm_skipped = None
    if "litellm" in phases and not (args.litellm.is_file() and os.access(args.litellm, os.X_OK)):
        litellm_skipped = f"no LiteLLM executable at {args.litellm}"
        print(f"NOTICE: skipping the litellm phase: {litellm_skipped} (`make litellm-peer` installs "
              "it, or pass --litellm PATH)", flush=True)
        phases.remove("litellm")
    ours = any(p in OURS for p in phases)
    from lookahead_router.data.dataset import RoutingDataset
    from lookahead_router.routers.base import Router
    from lookahead_router.serving.fake_upstream import free_port, stop, wait_until_serving

    work = Path(tempfile.mkdtemp(prefix="proxy-load-"))
    router = router_dir = None
    if ours:
        router_dir = args.router or build_router(args.data, work / "router")
        router = Router.load(router_dir)
    ds = RoutingDataset.load(args.data)
    prompts = [p for p in ds.queries["prompt"] if len(p) < 4000][:2000]
    up_port, proxy_port, litellm_port = free_port(), free_port(), free_port()
    router_alone = router_throughput(router_dir, args.engine, prompts) if "routed" in " ".join(phases) else None
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    up_url = f"http://127.0.0.1:{up_port}"
    results = dict.fromkeys(p.replace("-", "_") for p in PHASES)
    metrics, logs, procs = {}, {}, []
    upstream = subprocess.Popen([sys.executable, "-m", "lookahead_router.serving.fake_upstream",
                                 "--port", str(up_port), "--chunks", str(args.chunks),
                                 "--chunk-delay-ms", str(args.chunk_delay_ms)], env=env)
    procs.append(upstream)
    try:
        wait_until_serving(f"{up_url}/docs", upstream)
        results["direct"] = run_phase("direct", f"{up_url}/v1/chat/completions", "up-0", prompts, args,
                                      {"upstream": upstream})
        for workers, log_kind in sorted({OURS[p] for p in phases if p in OURS}):
            log_url = str(work / "requests.sqlite") if log_kind == "sqlite" else database(args, work)
            logs[workers] = log_url
            config = {"models": {c: {"base_url": f"{up_url}/v1", "model": f"up-{i}", "timeout_s": 30}
                                 for i, c in enumerate(router.candidates)},
                      "concurrency": args.clients + 56, "request_log": log_url,
                      "request_log_spool": str(work / f"spool-{workers}")}
            (work / "models.yaml").write_text(json.dumps(config))  # JSON is YAML
            proxy = subprocess.Popen([str(BIN / "lookahead"), "serve", "--router", str(router_dir),
                                      "--engine", args.engine, "--config", str(work / "models.yaml"),
                                      "--port", str(proxy_port), "--workers", str(workers)],
                                     env=env, stdout=subprocess.DEVNULL)
            procs.append(proxy)
            wait_until_serving(f"http://127.0.0.1:{proxy_port}/health", proxy)
            url = f"http://127.0.0.1:{proxy_port}/v1/chat/completions"
            for phase in [p for p in phases if OURS.get(p) == (workers, log_kind)]:
                model = "lookahead" if phase.startswith("routed") else router.candidates[0]
                results[phase.replace("-", "_")] = run_phase(phase, url, model, prompts, args,
                                                             {"upstream": upstream, "proxy": proxy})
            metrics[workers] = httpx.get(f"http://127.0.0.1:{proxy_port}/metrics").text  # one worker's
            stop(proxy)  # not competing for the CPU with the next server
        if "litellm" in phases:
            print(f"starting LiteLLM ({args.litellm}) ...", flush=True)
            peer = start_litellm(args.litellm, up_port, litellm_port, work)
            procs.append(peer)
            try:
                wait_until_serving(f"http://127.0.0.1:{litellm_port}/health/liveliness", peer)
            except RuntimeError:
                print((work / "litellm.log").read_text(errors="replace")[-3000:], file=sys.stderr)
                raise
            results["litellm"] = run_phase("litellm", f"http://127.0.0.1:{litellm_port}/v1/chat/completions",
                                           "up-0", prompts, args, {"upstream": upstream, "proxy": peer})
            stop(peer)
    finally:
        for proc in reversed(procs):
            stop(proc)

    direct = results["direct"]
    router_ms = {w: [r[0] for r in from_log(url, "SELECT router_ms FROM requests WHERE router_ms IS NOT NULL")]
                 for w, url in logs.items()}
    per_replica = {w: sorted(n for _, n in from_log(url, "SELECT replica, COUNT(*) FROM requests GROUP BY replica"))
                   for w, url in logs.items()}
    batches = {w: _metric(text, "lookahead_router_batch_size_sum") / _metric(text, "lookahead_router_batch_size_count")
               for w, text in metrics.items()}
    added = {phase: {k: {p: x[k][p] - direct[k][p] for p in ("p50", "p99")}
                     for k in ("ttfb_ms", "total_ms")}
             for phase, x in results.items() if phase != "direct" and x is not None}
    ratio = {phase: {k: {p: _ratio(added[phase][k][p], added["litellm"][k][p]) for p in ("p50", "p99")}
                     for k in ("ttfb_ms", "total_ms")}
             for phase in added if phase != "litellm" and "litellm" in added}
    result = {
        **environment(),   # the proxy's subprocess inherits the precision setting
        "device": f"{platform.machine()} CPU, {os.cpu_count()} cores (upstream, proxy and clients share it)",
        "clients": args.clients, "seconds": args.seconds, "phases": phases,
        "router": router.name if router else None, "engine": args.engine,
        "router_dir": str(router_dir) if router_dir else None,
        "candidates": router.candidates if router else None,
        "fake_upstream": {"chunks": args.chunks, "chunk_delay_ms": args.chunk_delay_ms},
        **results,
        "added_ms": added,
        "added_vs_litellm": ratio,  # ours added / LiteLLM's added, same percentile
        # per worker count: from the request log (routed requests only) and one worker's /metrics
        "router_inference_ms": {w: _percentiles([m / 1000 for m in ms]) for w, ms in router_ms.items() if ms},
        "router_mean_batch": batches,
        "request_logs": {w: "postgresql" if u.startswith("postgresql") else "sqlite" for w, u in logs.items()},
        "versions": versions(args.litellm if "litellm" in phases else None),
        "litellm_options": ("--num_workers 1 --keepalive_timeout 75, uvicorn + uvloop + httptools, no "
                            "access log, LITELLM_LOG=ERROR, no callbacks/DB/retries/master key, "
                            "telemetry off") if "litellm" in phases else None,
        "litellm_skipped": litellm_skipped,
        "router_alone": router_alone,
        "logged_per_replica": per_replica,  # per worker count: rows each worker logged (every phase)
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }
    name = args.out or f"proxy_load_{'cuda' if _has_cuda() else 'cpu'}"
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (HERE / "results" / f"{name}.md").write_text(markdown(result))
    print(markdown(result))


def _ratio(ours: float, peer: float) -> float | None:
    return ours / peer if peer > 0 else None


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return float("nan")


def _has_cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def markdown(r: dict) -> str:
    rows = [
        "| | requests | errors | throughput (req/s) | TTFB p50 | TTFB p99 | total p50 | total p99 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {"direct": "direct to upstream", "pass_through": "proxy, pass-through (1 worker, SQLite log)",
              "routed": "proxy, routed (1 worker, SQLite log)",
              "pass_through_2w": "proxy, pass-through (2 workers, PostgreSQL log)",
              "routed_2w": "proxy, routed (2 workers, PostgreSQL log)", "litellm": "LiteLLM proxy"}
    for phase, label in labels.items():
        if (x := r.get(phase)) is None:
            continue
        rows.append(f"| {label} | {x['requests']} | {x['errors']} | {x['throughput_rps']:.1f} | "
                    f"{x['ttfb_ms']['p50']:.1f} | {x['ttfb_ms']['p99']:.1f} | "
                    f"{x['total_ms']['p50']:.1f} | {x['total_ms']['p99']:.1f} |")
    for phase, a in r["added_ms"].items():
        label = "added by LiteLLM" if phase == "litellm" else f"added by the proxy, {labels[phase][7:]}"
        rows.append(f"| {label} | | | | {a['ttfb_ms']['p50']:.1f} | "
                    f"{a['ttfb_ms']['p99']:.1f} | {a['total_ms']['p50']:.1f} | {a['total_ms']['p99']:.1f} |")
    lines = [f"# Proxy load: {r['clients']} concurrent streaming clients, {r['seconds']:.0f} s per phase", ""]
    about = f"Device: {r['device']}. "
    if r.get("router"):
        about += f"Router: {r['router']} over {len(r['candidates'])} candidates. "
    up = r["fake_upstream"]
    about += f"Fake upstream: {up['chunks']} chunks, {up['chunk_delay_ms']} ms apart. Latencies in ms."
    lines += [about, "", *rows, ""]
    if r.get("added_vs_litellm"):
        def fmt(x):
            return "n/a" if x is None else f"{x:.2f}"
        parts = [f"{phase.replace('_', '-')} {fmt(q['ttfb_ms']['p50'])} / {fmt(q['ttfb_ms']['p99'])} (TTFB), "
                 f"{fmt(q['total_ms']['p50'])} / {fmt(q['total_ms']['p99'])} (total)"
                 for phase, q in r["added_vs_litellm"].items()]
        lines += ["Latency our proxy adds as a fraction of what LiteLLM adds (p50 / p99): "
                  + "; ".join(parts) + ".", ""]
    if r.get("litellm") is not None:
        v = r["versions"]
        lines += [f"LiteLLM {v.get('litellm')} (uvicorn {v.get('litellm_uvicorn')}): {r['litellm_options']}; "
                  f"ours on uvicorn {v['ours_uvicorn']}.", ""]
    elif r.get("litellm_skipped"):
        lines += [f"LiteLLM phase skipped: {r['litellm_skipped']}.", ""]
    cpu_rows = [f"| {labels[phase]} | " + " | ".join(
        f"{x['cpu'][who]['ms_per_request']:.2f} ({x['cpu'][who]['cores']:.2f})" if who in x["cpu"] else ""
        for who in ("proxy", "upstream", "clients")) + " |"
        for phase in labels if (x := r.get(phase)) is not None and "cpu" in x]
    if cpu_rows:
        lines += ["Where the CPU goes: ms of CPU per request (cores in use) of each process, per phase:", "",
                  "| | proxy (ours or LiteLLM) | fake upstream | load generator |", "|---|---:|---:|---:|",
                  *cpu_rows, ""]
    for workers, ri in (r.get("router_inference_ms") or {}).items():
        lines += [f"Router inference inside the proxy, {workers} worker(s) (queueing for a batch included): "
                  f"p50 {ri['p50']:.1f} ms, p99 {ri['p99']:.1f} ms; mean batch "
                  f"{r['router_mean_batch'].get(workers, float('nan')):.1f} prompts (one worker's /metrics).", ""]
    for workers, counts in (r.get("logged_per_replica") or {}).items():
        if len(counts) > 1:
            lines += [f"Requests each of the {workers} workers served (from the request log): "
                      f"{', '.join(map(str, counts))}.", ""]
    if (alone := r.get("router_alone")) is not None:
        lines += [f"The router alone (its own process, every core, nothing else running, batches of "
                  f"{alone['batch']}, engine {r['engine']}): {alone['queries_per_s']:.1f} queries/s, the "
                  "ceiling of routed throughput on this machine.", ""]
    lines += [f"Command: `{r['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
