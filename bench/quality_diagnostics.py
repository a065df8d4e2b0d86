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


def load_choices(bench: Path, ds) -> dict[str, list[np.ndarray]]:
    """Per router, per seed: the candidate index chosen for each row of ``ds`` (-1: not decided)."""
    from lookahead_router.evaluation.decisions import Decisions
    out = {}
    for folder in sorted((bench / "decisions").iterdir()):
        seeds = sorted(p for p in folder.iterdir() if p.is_dir())
        per_seed = []
        for seed in seeds:
            parts = [Decisions.load(f) for f in sorted(seed.glob("*.jsonl"))]
            joined = Decisions(folder.name, [i for p in parts for i in p.ids], [m for p in parts for m in p.models])
            per_seed.append(joined.choice_for(ds))
        if per_seed:
            out[folder.name] = per_seed
    return out


def task_best_choices(ds, bench: Path) -> list[np.ndarray]:
    """task-best's choices, rebuilt from the run's folds (the same rule as the benchmark)."""
    from lookahead_router.data.splits import make_folds
    from lookahead_router.evaluation.benchmark import PROTOCOLS
    from lookahead_router.evaluation.decisions import task_best_decisions
    run = json.loads((bench / "report.json").read_text())["run"]
    kind, k = PROTOCOLS[run["protocol"]]
    out = []
    for seed in run["seeds"]:
        choice = np.full(len(ds), -1)
        for fold in make_folds(ds, kind, k=k, seed=seed, add_train=run["add_train"]):
            d = task_best_decisions(ds.subset(fold.train), ds.subset(fold.test))
            c = d.choice_for(ds)
            choice[c >= 0] = c[c >= 0]
        out.append(choice)
    return out


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
    from lookahead_router.data.dataset import RoutingDataset
    from lookahead_router.data.labels import binary_labels
    ds = RoutingDataset.load(args.data)
    choices = load_choices(args.bench, ds)
    choices["task-best"] = task_best_choices(ds, args.bench)
    source = ds.queries["source"].to_numpy()
    benchmarks = [b for b in json.loads((args.bench / "report.json").read_text())["benchmarks"]]
    groups = {b: np.flatnonzero(source == b) for b in benchmarks}
    groups["all"] = np.concatenate(list(groups.values()))
    pairs = [tuple(p.split(":")) for p in args.pairs.split(",") if p]
    pairs = [p for p in pairs if p[0] in choices and p[1] in choices]
    rows = {"same choice as task-best (%)": {r: {g: agreement(c, choices["task-best"], idx) for g, idx in groups.items()}
                                             for r, c in choices.items() if r != "task-best"},
            "same choice as each other (%)": {f"{a} vs {b}": {g: agreement(choices[a], choices[b], idx)
                                                              for g, idx in groups.items()} for a, b in pairs},
            "share of picks per candidate (%)": {r: dict(zip(ds.candidates, shares([c[groups["all"]] for c in choice],
                                                                                    len(ds.candidates))))
                                                 for r, choice in choices.items()}}
    labels = binary_labels(ds)
    rows["positive labels per candidate (%)"] = {
        s: dict(zip(ds.candidates, (np.nanmean(labels[source == s], 0) * 100).tolist()))
        for s in dict.fromkeys(source)}
    name = args.out or f"{args.bench.name}_diagnostics"
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    seeds = json.loads((args.bench / "report.json").read_text())["run"]["seeds"]
    (out / f"{name}.json").write_text(json.dumps({"run": {"bench": str(args.bench), "seeds": seeds}, **rows},
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
