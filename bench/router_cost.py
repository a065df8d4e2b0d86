"""Router cost at inference (the shape of the paper's Table 8): GFLOPs per query for T = 3, 4, 5
candidates, p50 / p95 latency per query at batch 1 and throughput at batch 64.

Every router is fitted briefly (cost does not depend on how well it is trained) on a small slice
of the routing dataset with the options of a benchmark preset, then scores prompts with its
feature cache switched off: what a deployed router pays per new prompt (frozen routers run their
backbone over the prompt; Lookahead also runs its MID tokens). FLOPs are counted by
``torch.utils.flop_counter`` (matmuls and attention; kNN's numpy search is not counted), as the
mean over the same 16 prompts for every router and T.

    .venv/bin/python bench/router_cost.py [--data runs/paper.parquet] [--preset cpu]
        [--routers knn,...] [--latency-queries 100] [--throughput-queries 640] [--out NAME]

Writes bench/results/<NAME>.json and .md (default NAME: router_cost_<preset>_<device>).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

HERE = Path(__file__).parent
DEFAULT_ROUTERS = ("knn", "kmeans", "smoothie", "mlc-mlm", "zooter-mlm", "routerdc-mlm", "mlc-clm", "zooter-clm",
                   "routerdc-clm", "lookahead-mlm", "lookahead-mlm-separate", "lookahead-clm")


def fitted(name: str, options: dict, train, T: int):
    from lookahead_router.routers.base import make_router
    if "epochs" in options:  # a neural router: one short epoch is enough to measure its cost
        options = {**options, "epochs": 1, "eval_every": 10 ** 6}
    router = make_router(name, **{**options, "progress": False})
    return router.fit(train.select_candidates(train.candidates[:T]))


@contextmanager
def uncached():
    """Every prompt is embedded afresh, as a deployed router meets new prompts (no feature cache)."""
    from lookahead_router.routers.features import inference_only
    inference_only(True)
    try:
        yield
    finally:
        inference_only(False)


def gflops(router, prompts: list[str]) -> float:
    counter = FlopCounterMode(display=False)
    with uncached(), counter:
        for p in prompts:
            router.score([p])
    return counter.get_total_flops() / len(prompts) / 1e9


def latency(router, prompts: list[str]) -> dict:
    times = []
    with uncached():
        for p in prompts:
            start = time.perf_counter()
            router.score([p])
            times.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95))}


def throughput(router, prompts: list[str], batch: int = 64) -> float:
    start = time.perf_counter()
    with uncached():
        for i in range(0, len(prompts), batch):
            router.score(prompts[i:i + batch])
    return len(prompts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="runs/paper.parquet")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--routers", default=",".join(DEFAULT_ROUTERS))
    parser.add_argument("--finetuned", default="mlc-mlm,lookahead-mlm,mlc-clm,lookahead-clm",
                        help="routers also measured as the `gpu` preset builds them: the backbone fine-tuned "
                             "and run over prompt + MID tokens (the paper's architecture, m = 64), with "
                             "prompts cut at 128 tokens")
    parser.add_argument("--train-rows", type=int, default=128)
    parser.add_argument("--latency-queries", type=int, default=100)
    parser.add_argument("--throughput-queries", type=int, default=640)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    os.environ["LOOKAHEAD_CACHE"] = tempfile.mkdtemp(prefix="router-cost-cache-")   # nothing cached
    from lookahead_router.data.dataset import RoutingDataset
    from lookahead_router.evaluation.benchmark import _device
    from lookahead_router.evaluation.presets import load_preset

    ds = RoutingDataset.load(args.data)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ds))
    train = ds.subset(np.sort(order[:args.train_rows]))
    prompts = ds.queries["prompt"].to_numpy()[order[args.train_rows:]].tolist()
    preset, gpu = load_preset(args.preset), load_preset("gpu")
    plans = [(r, False) for r in args.routers.split(",") if r]
    plans += [(r, True) for r in args.finetuned.split(",") if r]
    results = []
    used = 0

    def fresh(n: int) -> list[str]:   # prompts nobody has embedded yet
        nonlocal used
        used += n
        return prompts[used - n:used]

    flop_prompts = fresh(16)   # the same prompts for every router and T
    for name, finetune in plans:
        options = preset.options(name)
        rows = train
        if finetune:  # the paper's architecture; a few rows, short prompts and responses keep the fit quick
            options = {**gpu.options(name), "batch_size": 8, "grad_accum": 1, "max_length": 128}
            if name.startswith("lookahead-clm"):
                options["response_length"] = 8   # training only: scoring runs the MID tokens alone
            rows = train.subset(np.arange(32))
        label = f"{name} (fine-tuned)" if finetune else name
        row = {"router": label, "options": options, "gflops": {}}
        for T in (3, 4, 5):
            router = fitted(name, options, rows, T)
            row["gflops"][T] = gflops(router, flop_prompts)
        row.update(latency(router, fresh(args.latency_queries)))
        row["throughput_qps"] = throughput(router, fresh(args.throughput_queries))
        print(f"{label:32s} GFLOPs T=3/4/5 {row['gflops'][3]:.2f}/{row['gflops'][4]:.2f}/{row['gflops'][5]:.2f}"
              f"  p50 {row['p50_ms']:.1f} ms  p95 {row['p95_ms']:.1f} ms  {row['throughput_qps']:.1f} q/s",
              flush=True)
        results.append(row)
    device = _device()
    meta = {"device": device, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "preset": args.preset,
            "torch": torch.__version__, "command": " ".join(sys.argv)}
    name = args.out or f"router_cost_{args.preset}_{'gpu' if torch.cuda.is_available() else 'cpu'}"
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    lines = [f"Router cost, preset `{args.preset}`, on {device} ({meta['machine']}); "
             f"prompts never seen before, empty feature cache.", "",
             "| router | GFLOPs/query T=3 | T=4 | T=5 | latency p50 ms (batch 1) | p95 ms | throughput q/s (batch 64) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        g = r["gflops"]
        lines.append(f"| {r['router']} | {g[3]:.2f} | {g[4]:.2f} | {g[5]:.2f} | {r['p50_ms']:.1f} | "
                     f"{r['p95_ms']:.1f} | {r['throughput_qps']:.1f} |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
