"""Do the onnx feature engines route like PyTorch? Routers are trained once, on the reference
(torch) engine, with the `cpu` preset's options; then the same held-out benchmark prompts are
routed with each engine (the frozen encoder on PyTorch, on ONNX Runtime fp32, and int8). Reported
per router and engine: the share of prompts where the engine picks the same candidate as PyTorch,
the largest score difference, and the average normalised score μn of its decisions, from the
project's own evaluation (``evaluation.report.evaluate``: each benchmark's native metric, μn
against Random and Oracle on the same prompts, averaged over benchmarks).
Acceptance: the same choice on >= 99% of prompts and the average μn within 0.3 of PyTorch's.

Split: fold 0 of the seeded 5-fold cross-validation (stratified by benchmark); routers train on
at most ``--train-per-source`` prompts of each benchmark of the other folds (a subset, to keep the
run near 10 minutes on 2 cores: embedding the training prompts is most of it) and are tested on
every prompt of fold 0 (``--test-per-source`` caps it). The subset is about a quarter of a full
cv5 training fold, so the neural routers train ``--epochs 4`` instead of the preset's one: about
the optimizer steps of one epoch on a full fold (one epoch on the subset leaves them near Random,
where near-ties make the comparison say little about deployed routers).

    .venv/bin/python bench/onnx_agreement.py [--data runs/paper.parquet]
        [--routers knn,mlc-mlm,lookahead-mlm] [--engines torch,onnx,onnx-int8]
        [--train-per-source 600] [--test-per-source 0] [--epochs 4] [--out onnx_agreement_cpu]

Writes bench/results/<NAME>.json and .md. Features are computed afresh (an empty cache).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
MIN_AGREEMENT, MAX_MU_N_GAP = 99.0, 0.3


def capped(ds, rows: np.ndarray, per_source: int, seed: int = 0) -> np.ndarray:
    """At most ``per_source`` of ``rows`` from each benchmark (seeded draw; 0: all of them)."""
    if not per_source:
        return np.sort(rows)
    rng = np.random.default_rng(seed)
    source = ds.queries["source"].to_numpy()[rows]
    keep = [rng.permutation(rows[source == s])[:per_source] for s in dict.fromkeys(source)]
    return np.sort(np.concatenate(keep))


def main() -> None:
    cache = tempfile.mkdtemp(prefix="onnx-agreement-cache-")
    os.environ["LOOKAHEAD_CACHE"] = cache   # nothing reused from earlier runs
    try:
        run()
    finally:
        shutil.rmtree(cache, ignore_errors=True)   # ~0.7 GB of prompt states


def run() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="runs/paper.parquet")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--routers", default="knn,mlc-mlm,lookahead-mlm")
    parser.add_argument("--engines", default="torch,onnx,onnx-int8", help="the first is the reference")
    parser.add_argument("--train-per-source", type=int, default=600)
    parser.add_argument("--test-per-source", type=int, default=0, help="0: every prompt of the held-out fold")
    parser.add_argument("--epochs", type=int, default=4, help="for the neural routers (the preset: 1)")
    parser.add_argument("--out", default="onnx_agreement_cpu")
    args = parser.parse_args()
    import onnxruntime

    from lookahead_router.data.dataset import RoutingDataset
    from lookahead_router.data.splits import make_folds
    from lookahead_router.evaluation.decisions import Decisions
    from lookahead_router.evaluation.presets import load_preset
    from lookahead_router.evaluation.report import evaluate
    from lookahead_router.precision import environment
    from lookahead_router.routers.registry import make_router
    from lookahead_router.routers.onnx_encoder import check_engine

    started = time.perf_counter()
    engines = [check_engine(e) for e in args.engines.split(",") if e]
    routers = [r for r in args.routers.split(",") if r]
    ds = RoutingDataset.load(args.data)
    fold = make_folds(ds, "cv", k=5, seed=0)[0]
    train = ds.subset(capped(ds, fold.train, args.train_per_source))
    test = ds.subset(capped(ds, fold.test, args.test_per_source))
    prompts = test.queries["prompt"].tolist()
    print(f"train on {len(train)} prompts, route {len(test)} held-out prompts", flush=True)
    preset = load_preset(args.preset)
    results, decisions, timings = [], [], {}
    for name in routers:
        start = time.perf_counter()
        options = {**preset.options(name), "progress": False}
        if "epochs" in options:
            options["epochs"] = args.epochs
        router = make_router(name, **options).use(engines[0]).fit(train)
        timings[f"{name} fit"] = time.perf_counter() - start
        scores = {}
        for engine in engines:
            router.use(engine)
            router.score(prompts[:1])       # the engine's export (cached on disk) is not timed
            start = time.perf_counter()
            scores[engine] = router.score(prompts)
            timings[f"{name} {engine} score"] = time.perf_counter() - start
            choice = scores[engine].argmax(1)
            decisions.append(Decisions(f"{name} [{engine}]", test.ids, [router.candidates[j] for j in choice]))
        reference = scores[engines[0]].argmax(1)
        for engine in engines:
            same = scores[engine].argmax(1) == reference
            results.append({"router": name, "engine": engine, "same_choice_pct": 100.0 * float(same.mean()),
                            "differing_prompts": int((~same).sum()),
                            "max_abs_score_diff": float(np.abs(scores[engine] - scores[engines[0]]).max()),
                            "score_s": timings[f"{name} {engine} score"]})
            print(f"{name:16s} {engine:9s} same choice {results[-1]['same_choice_pct']:.2f}% "
                  f"({results[-1]['differing_prompts']} differ), max |Δscore| {results[-1]['max_abs_score_diff']:.2e}, "
                  f"{results[-1]['score_s']:.0f} s", flush=True)
    report = evaluate(test, routers=(), decisions=decisions)
    for r in results:
        r["avg_mu_n"] = report.avg_mu_n(f"{r['router']} [{r['engine']}]")
        r["mu_n_by_benchmark"] = {b: report.rows[f"{r['router']} [{r['engine']}]"][b]["mu_n"]
                                  for b in report.benchmarks}
    for r in results:
        torch_mu = next(x["avg_mu_n"] for x in results if x["router"] == r["router"] and x["engine"] == engines[0])
        r["mu_n_gap"] = r["avg_mu_n"] - torch_mu
        r["passes"] = bool(r["same_choice_pct"] >= MIN_AGREEMENT and abs(r["mu_n_gap"]) <= MAX_MU_N_GAP)
    meta = {**environment(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "onnxruntime": onnxruntime.__version__, "preset": args.preset,
            "split": "fold 0 of cv5 (seed 0)", "train_prompts": len(train), "test_prompts": len(test),
            "test_prompts_by_benchmark": report.queries, "train_per_source": args.train_per_source,
            "test_per_source": args.test_per_source, "neural_epochs": args.epochs, "notes": report.notes, "timings_s": timings,
            "wall_s": time.perf_counter() - started, "load_average": os.getloadavg(),
            "acceptance": f"same choice >= {MIN_AGREEMENT}% and |avg μn gap| <= {MAX_MU_N_GAP}",
            "command": " ".join(sys.argv)}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{args.out}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    subset = (f"at most {args.train_per_source} training prompts per benchmark" if args.train_per_source
              else "every training prompt")
    lines = [f"Engine agreement on {meta['device']} ({meta['machine']}): routers trained on the `{args.preset}` "
             f"preset with the torch engine in {meta['precision']} ({len(train)} prompts of cv5 folds 1-4, "
             f"{subset}; neural routers "
             f"{args.epochs} epoch(s)), then routing the "
             f"{len(test)} held-out prompts of fold 0 with each engine. μn: the project's evaluation over "
             f"those prompts (benchmarks: {', '.join(f'{b} {n}' for b, n in report.queries.items())}).", "",
             "| router | engine | same choice as torch | prompts that differ | max abs score diff | avg μn | "
             "μn gap | passes (≥ 99%, ≤ 0.3) | score s |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in results:
        lines.append(f"| {r['router']} | {r['engine']} | {r['same_choice_pct']:.2f}% | {r['differing_prompts']} | "
                     f"{r['max_abs_score_diff']:.1e} | {r['avg_mu_n']:.2f} | {r['mu_n_gap']:+.2f} | "
                     f"{'yes' if r['passes'] else 'no'} | {r['score_s']:.0f} |")
    lines += [""] + [f"- {n}" for n in report.notes] + [
        "- score s: routing every held-out prompt (batches of 32) after a warm-up call that exports the "
        "engine's graph; routers on the same backbone, length and layer share one extractor, so a later one "
        "reuses the prompt states an earlier one computed (its time is then its own layers alone)",
        f"- wall time {meta['wall_s'] / 60:.1f} min, load average at the end {meta['load_average'][0]:.1f}"]
    (out / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
