"""Load benchmark of the routing proxy: C concurrent streaming clients for D seconds against fake
upstreams on loopback: straight at the upstream, through `lookahead serve` naming a candidate
(pass-through: the proxy's own overhead), and through it with model "lookahead" (routed).

The proxy runs a real router (kNN on the packaged MiniLM, fitted on a slice of the routing
dataset, unless --router names a saved one) and benchmark prompts. Reported: throughput, p50/p99
time to first byte and to the last byte, the latency the proxy adds (proxy minus direct, at the
same percentile), router inference on its own (from the proxy's request log) and the error count
(any non-200, transport error or stream without [DONE]).

    .venv/bin/python bench/proxy_load.py [--clients 200] [--seconds 60] [--data runs/paper.parquet]
        [--router DIR] [--chunks 16] [--chunk-delay-ms 10] [--out NAME]

Writes bench/results/<NAME>.json and .md (default NAME: proxy_load_<device>). Upstream, proxy
and clients share the machine, so on a small CPU they compete for it; the report says so.
"""

from __future__ import annotations

import argparse
import asyncio
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

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent


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
                first, finished = None, False
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
                except httpx.HTTPError as exc:
                    errors.append(type(exc).__name__)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--data", type=Path, default=Path("runs/paper.parquet"))
    parser.add_argument("--router", type=Path, help="saved router (default: kNN fitted here)")
    parser.add_argument("--chunks", type=int, default=16, help="SSE chunks per fake answer")
    parser.add_argument("--chunk-delay-ms", type=float, default=10, help="fake upstream's pause per chunk")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from lookahead_router.data.dataset import RoutingDataset
    from lookahead_router.routers.base import Router
    from lookahead_router.serving.fake_upstream import free_port, wait_until_serving

    work = Path(tempfile.mkdtemp(prefix="proxy-load-"))
    router_dir = args.router or build_router(args.data, work / "router")
    router = Router.load(router_dir)
    ds = RoutingDataset.load(args.data)
    prompts = [p for p in ds.queries["prompt"] if len(p) < 4000][:2000]
    up_port, proxy_port = free_port(), free_port()
    config = {"models": {c: {"base_url": f"http://127.0.0.1:{up_port}/v1", "model": f"up-{i}",
                             "timeout_s": 30} for i, c in enumerate(router.candidates)},
              "concurrency": args.clients + 56, "request_log": str(work / "requests.sqlite")}
    (work / "models.yaml").write_text(json.dumps(config))  # JSON is YAML
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    upstream = subprocess.Popen([sys.executable, "-m", "lookahead_router.serving.fake_upstream",
                                 "--port", str(up_port), "--chunks", str(args.chunks),
                                 "--chunk-delay-ms", str(args.chunk_delay_ms)], env=env)
    proxy = subprocess.Popen([str(BIN / "lookahead"), "serve", "--router", str(router_dir),
                              "--config", str(work / "models.yaml"), "--port", str(proxy_port)],
                             env=env, stdout=subprocess.DEVNULL)
    try:
        wait_until_serving(f"http://127.0.0.1:{up_port}/docs", upstream)
        wait_until_serving(f"http://127.0.0.1:{proxy_port}/health", proxy)
        print(f"direct: {args.clients} clients x {args.seconds:.0f} s ...", flush=True)
        direct = asyncio.run(load(f"http://127.0.0.1:{up_port}/v1/chat/completions", "up-0", prompts,
                                  args.clients, args.seconds))
        print(f"pass-through: {args.clients} clients x {args.seconds:.0f} s ...", flush=True)
        passed = asyncio.run(load(f"http://127.0.0.1:{proxy_port}/v1/chat/completions",
                                  router.candidates[0], prompts, args.clients, args.seconds))
        print(f"routed: {args.clients} clients x {args.seconds:.0f} s ...", flush=True)
        proxied = asyncio.run(load(f"http://127.0.0.1:{proxy_port}/v1/chat/completions", "lookahead",
                                   prompts, args.clients, args.seconds))
        metrics = httpx.get(f"http://127.0.0.1:{proxy_port}/metrics").text
    finally:
        for proc in (proxy, upstream):
            proc.terminate()
            proc.wait(timeout=30)
    router_ms = [r[0] for r in sqlite3.connect(work / "requests.sqlite").execute(
        "SELECT router_ms FROM requests WHERE router_ms IS NOT NULL")]
    batch_sum = _metric(metrics, "lookahead_router_batch_size_sum")
    batch_count = _metric(metrics, "lookahead_router_batch_size_count")
    result = {
        "device": f"{platform.machine()} CPU, {os.cpu_count()} cores (upstream, proxy and clients share it)",
        "clients": args.clients, "seconds": args.seconds, "router": router.name,
        "router_dir": str(router_dir), "candidates": router.candidates,
        "fake_upstream": {"chunks": args.chunks, "chunk_delay_ms": args.chunk_delay_ms},
        "direct": direct, "pass_through": passed, "routed": proxied,
        "added_ms": {phase: {k: {p: x[k][p] - direct[k][p] for p in ("p50", "p99")}
                             for k in ("ttfb_ms", "total_ms")}
                     for phase, x in (("pass_through", passed), ("routed", proxied))},
        "router_inference_ms": _percentiles([m / 1000 for m in router_ms]),
        "router_mean_batch": batch_sum / batch_count if batch_count else float("nan"),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }
    name = args.out or f"proxy_load_{'cuda' if _has_cuda() else 'cpu'}"
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (HERE / "results" / f"{name}.md").write_text(markdown(result))
    print(markdown(result))


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
    for label, x in (("direct to upstream", r["direct"]), ("proxy, pass-through", r["pass_through"]),
                     ("proxy, routed", r["routed"])):
        rows.append(f"| {label} | {x['requests']} | {x['errors']} | {x['throughput_rps']:.1f} | "
                    f"{x['ttfb_ms']['p50']:.1f} | {x['ttfb_ms']['p99']:.1f} | "
                    f"{x['total_ms']['p50']:.1f} | {x['total_ms']['p99']:.1f} |")
    for phase in ("pass_through", "routed"):
        a = r["added_ms"][phase]
        rows.append(f"| added by the proxy, {phase.replace('_', '-')} | | | | {a['ttfb_ms']['p50']:.1f} | "
                    f"{a['ttfb_ms']['p99']:.1f} | {a['total_ms']['p50']:.1f} | {a['total_ms']['p99']:.1f} |")
    ri = r["router_inference_ms"]
    return "\n".join([
        f"# Proxy load: {r['clients']} concurrent streaming clients, {r['seconds']:.0f} s per phase",
        "", f"Device: {r['device']}. Router: {r['router']} over {len(r['candidates'])} candidates. "
        f"Fake upstream: {r['fake_upstream']['chunks']} chunks, {r['fake_upstream']['chunk_delay_ms']} ms "
        "apart. Latencies in ms.", "", *rows, "",
        f"Router inference inside the proxy (queueing for a batch included): p50 {ri['p50']:.1f} ms, "
        f"p99 {ri['p99']:.1f} ms; mean batch {r['router_mean_batch']:.1f} prompts.", "",
        f"Command: `{r['command']}`", ""])


if __name__ == "__main__":
    main()
