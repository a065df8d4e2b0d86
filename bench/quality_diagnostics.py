"""Diagnostics of a finished `lookahead benchmark` folder, from its saved decisions (no training):
how often two routers pick the same candidate, how often each router picks what `task-best`
(the per-benchmark lookup) picks, per benchmark and over all queries, how each router shares
its picks among the candidates, pooled over seeds, and each candidate's share of positive training
labels (the default relative rule) per source.

    .venv/bin/python bench/quality_diagnostics.py --bench runs/quality_cpu_cv5 \
        [--data runs/paper.parquet] [--pairs lookahead-mlm:lookahead-mlm-norm,...] [--out NAME]

Writes bench/results/<NAME>.json and .md (default NAME: <bench folder name>_diagnostics).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
PAIRS = "lookahead-mlm:lookahead-mlm-norm,lookahead-mlm:mlc-mlm,lookahead-mlm:ceiling-first-m,lookahead-clm:lookahead-clm-norm"


def agreement(a: list[np.ndarray], b: list[np.ndarray], rows: np.ndarray) -> float:
    """Share of (seed, query) pairs on ``rows`` where both chose the same candidate."""
    same = [(x[rows] == y[rows]) & (x[rows] >= 0) for x, y in zip(a, b)]
    return float(np.mean(np.concatenate(same)) * 100)


def shares(choice: list[np.ndarray], n_candidates: int) -> list[float]:
    """Share of (seed, query) decisions that go to each candidate."""
    picked = np.concatenate([c[c >= 0] for c in choice])
    return (np.bincount(picked, minlength=n_candidates) / max(len(picked), 1) * 100).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True)
    parser.add_argument("--data", default="runs/paper.parquet")
    parser.add_argument("--pairs", default=PAIRS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from lookahead_router.analysis.kinds import ENVIRONMENT_KEYS
    from lookahead_router.analysis.run import BenchRun
    from lookahead_router.data.dataset import RoutingDataset
    from lookahead_router.data.labels import binary_labels
    run = BenchRun.load(args.bench, args.data)
    ds, choices = run.ds, run.choices
    source = ds.queries["source"].to_numpy()
    groups = {b: np.flatnonzero(source == b) for b in run.report["benchmarks"]}
    groups["all"] = np.arange(len(ds))
    pairs = [tuple(p.split(":")) for p in args.pairs.split(",") if p]
    pairs = [p for p in pairs if p[0] in choices and p[1] in choices]
    rows = {"same choice as task-best (%)": {r: {g: agreement(c, choices["task-best"], idx) for g, idx in groups.items()}
                                             for r, c in choices.items() if r != "task-best"},
            "same choice as each other (%)": {f"{a} vs {b}": {g: agreement(choices[a], choices[b], idx)
                                                              for g, idx in groups.items()} for a, b in pairs},
            "share of picks per candidate (%)": {r: dict(zip(ds.candidates, shares([c[groups["all"]] for c in choice],
                                                                                    len(ds.candidates))))
                                                 for r, choice in choices.items()}}
    full = RoutingDataset.load(args.data).select_candidates(ds.candidates)
    labels, source = binary_labels(full), full.queries["source"].to_numpy()
    rows["positive labels per candidate (%)"] = {
        s: dict(zip(ds.candidates, (np.nanmean(labels[source == s], 0) * 100).tolist()))
        for s in dict.fromkeys(source)}
    name = args.out or f"{args.bench.name}_diagnostics"
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    seeds = run.seeds
    (out / f"{name}.json").write_text(json.dumps({"run": {"bench": str(args.bench), "seeds": seeds, **{
        k: run.report["run"].get(k) for k in ENVIRONMENT_KEYS}}, **rows},
                                                 indent=2) + "\n")
    lines = [f"Decision agreement in `{args.bench}` (every seed's out-of-fold decisions pooled).", ""]
    for title, table in rows.items():
        if not table:
            continue
        columns = list(next(iter(table.values())))
        lines += [f"### {title}", "", "| row | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        lines += [f"| {r} | " + " | ".join(f"{v:.1f}" for v in cells.values()) + " |" for r, cells in table.items()]
        lines.append("")
    (out / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
