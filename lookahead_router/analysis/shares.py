"""`lookahead analyze shares` (the paper's Table 4): per benchmark, the share of queries each router
sends to each candidate, beside the Oracle's, from the saved decisions of every seed.

The Oracle's share splits each query evenly among the candidates with its best score: on the
binary benchmarks most queries have several correct candidates (or none), and counting only the
first of them would show the candidates' order, not where the good answers are."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from lookahead_router.analysis.run import ORACLE, Analysis, BenchRun, Table, pyplot


def share_table(run: BenchRun, routers: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """benchmark -> row -> candidate -> % of the benchmark's (seed, query) decisions."""
    source = run.ds.queries["source"].to_numpy()
    choices = {r: run.choices[r] for r in routers}
    scores = np.where(np.isnan(run.ds.scores), -np.inf, run.ds.scores)
    best = scores == scores.max(axis=1, keepdims=True)
    oracle = best / best.sum(axis=1, keepdims=True)       # [n, T]: each query's weight per candidate
    out = {}
    for bench in run.report["benchmarks"]:
        rows = source == bench
        out[bench] = {}
        for name, per_seed in choices.items():
            picked = np.concatenate([c[rows] for c in per_seed])
            counts = np.bincount(picked, minlength=len(run.ds.candidates))
            out[bench][name] = dict(zip(run.ds.candidates, (counts / max(len(picked), 1) * 100).tolist()))
        out[bench][ORACLE] = dict(zip(run.ds.candidates, (oracle[rows].mean(axis=0) * 100).tolist()))
    return out


def analyze_shares(run: BenchRun, out_dir: Path, routers: Sequence[str] | None = None) -> Analysis:
    routers = list(routers or run.routers)
    run.require(*routers)
    table = share_table(run, routers)
    candidates = run.ds.candidates
    tables = [Table(bench, ["row", *candidates], [[name, *cells.values()] for name, cells in rows.items()])
              for bench, rows in table.items()]
    _plot(table, candidates, out_dir / "shares.png")
    notes = [f"% of each benchmark's queries sent to each candidate, pooled over seeds {run.seeds} "
             "(the Oracle: each query split evenly among its best-scoring candidates)"]
    return Analysis("shares", "Routing shares per benchmark (Table 4)", {"shares": table, "seeds": run.seeds},
                    tables, ["shares.png"], notes)


def _plot(table: dict, candidates: list[str], path: Path) -> None:
    plt = pyplot()
    benches = list(table)
    cols = min(4, len(benches))
    n_rows = -(-len(benches) // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(4.2 * cols, 3.6 * n_rows), squeeze=False)
    colours = plt.get_cmap("tab10").colors
    for ax, bench in zip(axes.flat, benches):
        names = list(table[bench])
        bottom = np.zeros(len(names))
        for j, cand in enumerate(candidates):
            vals = np.array([table[bench][n][cand] for n in names])
            ax.bar(range(len(names)), vals, bottom=bottom, color=colours[j % 10], label=cand)
            bottom += vals
        ax.set_title(bench, fontsize=10)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_ylim(0, 100)
    for ax in list(axes.flat)[len(benches):]:
        ax.axis("off")
    axes.flat[0].set_ylabel("% of queries")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(candidates), fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
