"""`lookahead analyze difficulty` (the paper's Table 5): wins, ties and losses of router A against
router B, with queries grouped by difficulty.

On the binary benchmarks (every per-query quality 0 or 1: GSM8K, MATH, HumanEval, MBPP) a query's
group is how many candidates answered it correctly. On the others it is the spread of the
candidates' per-query quality (best minus worst), cut into thirds within each benchmark. A win is a
query where A's choice has the higher per-query quality (each benchmark's native per-query score:
correctness, the MT-Bench rating, the judge's preference), counted over every seed's decisions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lookahead_router.analysis.run import Analysis, AnalysisError, BenchRun, Table, pyplot
from lookahead_router.evaluation.benchmark import BASELINES
from lookahead_router.metrics.native import metric_for, normalised

SPREAD_THIRDS = ("low", "mid", "high")


def default_pair(run: BenchRun) -> tuple[str, str]:
    """The first Lookahead router of the run against its best query-only baseline."""
    a = next((r for r in ("lookahead-mlm", "lookahead-clm") if r in run.decisions), None)
    baselines = [b for b in BASELINES if b in run.decisions and b in run.report["rows"]]
    if a is None or not baselines:
        raise AnalysisError(f"{run.folder}: give --a and --b (no Lookahead router or baseline found)")
    return a, max(baselines, key=run.avg_mu_n)


def groups(run: BenchRun) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per row of ``run.ds``: its group's label and per-candidate quality [n, T]; the group order."""
    source = run.ds.queries["source"].to_numpy()
    quality = np.full(run.ds.scores.shape, np.nan)
    label = np.empty(len(run.ds), dtype=object)
    t = len(run.ds.candidates)
    for bench in run.report["benchmarks"]:
        rows = np.flatnonzero(source == bench)
        q = metric_for(bench, run.ds.subset(rows)).per_query()
        quality[rows] = q
        if np.isin(q[~np.isnan(q)], (0.0, 1.0)).all():
            label[rows] = [f"{int(k)} of {t} correct" for k in np.nansum(q, axis=1)]
        else:
            spread = np.nanmax(q, axis=1) - np.nanmin(q, axis=1)
            cuts = np.quantile(spread, [1 / 3, 2 / 3])
            label[rows] = [f"spread: {SPREAD_THIRDS[int(np.searchsorted(cuts, s, side='right'))]}" for s in spread]
    order = [f"{k} of {t} correct" for k in range(t + 1)] + [f"spread: {s}" for s in SPREAD_THIRDS]
    return label, quality, [g for g in order if (label == g).any()]


def analyze_difficulty(run: BenchRun, out_dir: Path, a: str | None = None, b: str | None = None) -> Analysis:
    if (a is None) != (b is None):
        raise AnalysisError("give both --a and --b, or neither (the default pair)")
    a, b = (a, b) if a is not None else default_pair(run)
    run.require(a, b)
    label, quality, order = groups(run)
    source = run.ds.queries["source"].to_numpy()
    rows_idx = np.arange(len(run.ds))
    result = {}
    for group in order:
        in_group = label == group
        wins = ties = losses = 0
        for ca, cb in zip(run.choices[a], run.choices[b]):
            qa, qb = quality[rows_idx, ca][in_group], quality[rows_idx, cb][in_group]
            wins += int((qa > qb).sum())
            losses += int((qa < qb).sum())
            ties += int((qa == qb).sum())
        total = wins + ties + losses
        result[group] = {"queries": int(in_group.sum()), "wins": wins, "ties": ties, "losses": losses,
                         "margin": (wins - losses) / total * 100 if total else float("nan"),
                         "mu_n": {r: _group_mu_n(run.choices[r], quality, in_group, source) for r in (a, b)}}
    table = Table(f"{a} (A) against {b} (B)",
                  ["group", "queries", "wins", "ties", "losses", "margin (W−L, %)", f"μn {a}", f"μn {b}"],
                  [[g, v["queries"], v["wins"], v["ties"], v["losses"], v["margin"], v["mu_n"][a], v["mu_n"][b]]
                   for g, v in result.items()])
    _plot(result, a, b, out_dir / "difficulty.png")
    notes = [f"wins / ties / losses counted over every query and seed ({run.seeds}); margin = (wins − losses) / "
             "decisions", "binary benchmarks: groups by how many candidates answered correctly; the others: "
             "thirds of the candidates' quality spread within each benchmark",
             "μn in a group: the mean per-query quality of the choices, normalised between Random and Oracle on "
             "that group's queries per benchmark, then averaged over benchmarks (– where Random = Oracle)"]
    return Analysis("difficulty", "Wins, ties and losses by query difficulty (Table 5)",
                    {"a": a, "b": b, "seeds": run.seeds, "groups": result}, [table], ["difficulty.png"], notes)


def _group_mu_n(choices: list[np.ndarray], quality: np.ndarray, in_group: np.ndarray, source: np.ndarray) -> float:
    values = []
    for bench in dict.fromkeys(source[in_group]):
        rows = np.flatnonzero(in_group & (source == bench))
        q = quality[rows]
        mu_random, mu_oracle = float(np.nanmean(np.nanmean(q, axis=1))), float(np.nanmean(np.nanmax(q, axis=1)))
        mu = float(np.mean([np.nanmean(q[np.arange(len(rows)), c[rows]]) for c in choices]))
        values.append(normalised(mu, mu_random, mu_oracle))
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def _plot(result: dict, a: str, b: str, path: Path) -> None:
    plt = pyplot()
    names = list(result)
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.5))
    left = np.zeros(len(names))
    for key, colour in (("wins", "tab:green"), ("ties", "lightgray"), ("losses", "tab:red")):
        vals = np.array([result[g][key] / max(1, result[g]["wins"] + result[g]["ties"] + result[g]["losses"]) * 100
                         for g in names])
        ax.barh(names, vals, left=left, color=colour, label=key)
        left += vals
    ax.invert_yaxis()
    ax.set_xlabel(f"% of decisions: {a} against {b}")
    ax.legend(fontsize=8, ncol=3, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
