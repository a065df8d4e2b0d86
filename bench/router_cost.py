"""Router cost at inference (the shape of the paper's Table 8): GFLOPs per query for T = 3, 4, 5
candidates, p50 / p95 latency per query at batch 1 and throughput at batch 64.

Every router is fitted briefly (cost does not depend on how well it is trained) on a small slice
of the routing dataset with the options of a benchmark preset, then scores prompts with its
feature cache switched off: what a deployed router pays per new prompt (frozen routers run their
backbone over the prompt; Lookahead also runs its MID tokens). FLOPs are counted by
``torch.utils.flop_counter`` (matmuls and attention; kNN's numpy search is not counted), as the
mean over the same 16 prompts for every router and T.

With ``--engines torch,onnx,onnx-int8`` each router is also measured with its frozen encoder on
ONNX Runtime (``routers/onnx_encoder.py``; GFLOPs are counted on torch only). The engines then
take turns prompt by prompt (batch by batch for throughput) over the same prompts, so that other
load on the machine falls on all of them alike; each one's export happens in a warm-up call
before any timing. Every row also splits its batch-1 time into tokenizer, encoder (the frozen
backbone on the engine) and the rest (the router's own work: trainable top layers, kNN search).

    .venv/bin/python bench/router_cost.py [--data runs/paper.parquet] [--preset cpu]
        [--routers knn,...] [--engines torch] [--latency-queries 100] [--throughput-queries 640] [--out NAME]

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
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

HERE = Path(__file__).parent
DEFAULT_ROUTERS = ("knn", "kmeans", "smoothie", "mlc-mlm", "zooter-mlm", "routerdc-mlm", "mlc-clm", "zooter-clm",
                   "routerdc-clm", "lookahead-mlm", "lookahead-mlm-separate", "lookahead-clm")


def fitted(name: str, options: dict, train, T: int):
    from lookahead_router.routers.registry import make_router
    if "epochs" in options:  # a neural router: one short epoch is enough to measure its cost
        options = {**options, "epochs": 1, "eval_every": 10 ** 6}
    router = make_router(name, **{**options, "progress": False})
    return router.fit(train.select_candidates(train.candidates[:T]))


@contextmanager
def uncached(router):
    """Every prompt is embedded afresh, as a deployed router meets new prompts (no feature cache)."""
    engine = router.runtime.get("engine")
    router.use(engine, keep_cache=False)
    try:
        yield
    finally:
        router.use(engine)


def gflops(router, prompts: list[str]) -> float:
    counter = FlopCounterMode(display=False)
    with uncached(router), counter:
        for p in prompts:
            router.score([p])
    return counter.get_total_flops() / len(prompts) / 1e9


@contextmanager
def stage_clock(spent: dict):
    """Adds the time of every tokenizer call and every encoder forward pass to ``spent``."""
    from lookahead_router.routers.features import FeatureExtractor
    forward, tokenizer_and_length = FeatureExtractor._forward, FeatureExtractor._tokenizer_and_length

    def timed_forward(self, *args):
        start = time.perf_counter()
        try:
            return forward(self, *args)
        finally:
            spent["encoder"] += time.perf_counter() - start

    def timed_tokenizer(self):
        tokenizer, length = tokenizer_and_length(self)

        def tokenize(*args, **kwargs):
            start = time.perf_counter()
            try:
                return tokenizer(*args, **kwargs)
            finally:
                spent["tokenizer"] += time.perf_counter() - start
        return tokenize, length
    FeatureExtractor._forward, FeatureExtractor._tokenizer_and_length = timed_forward, timed_tokenizer
    try:
        yield
    finally:
        FeatureExtractor._forward, FeatureExtractor._tokenizer_and_length = forward, tokenizer_and_length


def on_engines(router, engines: list[str], turn: int):
    """The engines in a rotated order, with each one selected in turn (no engine always goes first);
    every prompt is embedded afresh, as a deployed router meets new prompts."""
    for engine in engines[turn % len(engines):] + engines[:turn % len(engines)]:
        router.use(engine, keep_cache=False)
        yield engine
    router.use()


def latency(router, prompts: list[str], engines: list[str]) -> dict[str, dict]:
    """Per engine: p50 / p95 ms per query at batch 1, and the medians of its stages."""
    times = {e: defaultdict(list) for e in engines}
    for i, p in enumerate(prompts):
        for engine in on_engines(router, engines, i):
            spent = defaultdict(float)
            with stage_clock(spent):
                start = time.perf_counter()
                router.score([p])
                total = time.perf_counter() - start
            for stage, value in (("total", total), ("tokenizer", spent["tokenizer"]),
                                 ("encoder", spent["encoder"]),
                                 ("rest", total - spent["tokenizer"] - spent["encoder"])):
                times[engine][stage].append(value * 1000)
    return {e: {"p50_ms": float(np.percentile(t["total"], 50)), "p95_ms": float(np.percentile(t["total"], 95)),
                "stages_p50_ms": {k: float(np.median(t[k])) for k in ("tokenizer", "encoder", "rest")}}
            for e, t in times.items()}


def throughput(router, prompts: list[str], engines: list[str], batch: int = 64) -> dict[str, float]:
    spent = defaultdict(float)
    for n, i in enumerate(range(0, len(prompts), batch)):
        for engine in on_engines(router, engines, n):
            start = time.perf_counter()
            router.score(prompts[i:i + batch])
            spent[engine] += time.perf_counter() - start
    return {e: len(prompts) / spent[e] for e in engines}


def warm_up(router, engines: list[str], prompt: str) -> dict[str, float]:
    """One call per engine before timing: loads the backbone, or exports the ONNX graph (cached)."""
    seconds = {}
    for engine in on_engines(router, engines, 0):
        start = time.perf_counter()
        router.score([prompt])
        seconds[engine] = time.perf_counter() - start
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="runs/paper.parquet")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--routers", default=",".join(DEFAULT_ROUTERS))
    parser.add_argument("--finetuned", default="mlc-mlm,lookahead-mlm,mlc-clm,lookahead-clm",
                        help="routers also measured as the `gpu` preset builds them: the backbone fine-tuned "
                             "and run over prompt + MID tokens (the paper's architecture, m = 64), with "
                             "prompts cut at 128 tokens")
    parser.add_argument("--engines", default="torch",
                        help="comma-separated feature engines to measure side by side: torch, onnx, onnx-int8")
    parser.add_argument("--train-rows", type=int, default=128)
    parser.add_argument("--latency-queries", type=int, default=100)
    parser.add_argument("--throughput-queries", type=int, default=640)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    os.environ["LOOKAHEAD_CACHE"] = tempfile.mkdtemp(prefix="router-cost-cache-")   # nothing cached
    from lookahead_router.data.dataset import RoutingDataset
    from lookahead_router.evaluation.presets import load_preset
    from lookahead_router.precision import environment
    from lookahead_router.routers.onnx_encoder import check_engine

    engines = [check_engine(e) for e in args.engines.split(",") if e]
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
        flops = {}
        for T in (3, 4, 5):
            router = fitted(name, options, rows, T)
            flops[T] = gflops(router, flop_prompts)
        # the fine-tuned rows run the whole backbone as their trainable part: no frozen encoder
        row_engines = ["torch"] if finetune else engines
        ready_s = warm_up(router, row_engines, flop_prompts[0])
        timing = latency(router, fresh(args.latency_queries), row_engines)
        rate = throughput(router, fresh(args.throughput_queries), row_engines)
        for engine in row_engines:
            row = {"router": label, "engine": engine, "options": options,
                   "gflops": flops if engine == "torch" else None, **timing[engine],
                   "throughput_qps": rate[engine], "warm_up_s": ready_s[engine]}
            g = "/".join(f"{flops[T]:.2f}" for T in (3, 4, 5)) if engine == "torch" else "-"
            b = row["stages_p50_ms"]
            print(f"{label:28s} {engine:9s} GFLOPs T=3/4/5 {g:14s}  p50 {row['p50_ms']:.1f} ms  p95 {row['p95_ms']:.1f} ms"
                  f"  {row['throughput_qps']:.1f} q/s  (p50 tokenizer {b['tokenizer']:.1f} / encoder "
                  f"{b['encoder']:.1f} / rest {b['rest']:.1f} ms)", flush=True)
            results.append(row)
    import onnxruntime
    meta = {**environment(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "preset": args.preset,
            "onnxruntime": onnxruntime.__version__, "engines": engines,
            "load_average": os.getloadavg(), "command": " ".join(sys.argv)}
    name = args.out or f"router_cost_{args.preset}_{'gpu' if torch.cuda.is_available() else 'cpu'}"
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    lines = [f"Router cost, preset `{args.preset}`, on {meta['device']} ({meta['machine']}; torch engine in "
             f"{meta['precision']}); "
             f"prompts never seen before, empty feature cache; engines {', '.join(engines)}.", "",
             "| router | engine | GFLOPs/query T=3 | T=4 | T=5 | latency p50 ms (batch 1) | p95 ms | "
             "throughput q/s (batch 64) | p50 ms: tokenizer / encoder / rest |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        g = [f"{r['gflops'][T]:.2f}" for T in (3, 4, 5)] if r["gflops"] else ["-"] * 3
        b = r["stages_p50_ms"]
        lines.append(f"| {r['router']} | {r['engine']} | {' | '.join(g)} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
                     f"{r['throughput_qps']:.1f} | {b['tokenizer']:.1f} / {b['encoder']:.1f} / {b['rest']:.1f} |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
