"""`lookahead analyze cost` (the paper's Table 6): quality against what routing costs.

Each row's average μn (the report's, the mean over seeds) against
- its average $ per 1,000 queries: prompt + the chosen candidate's recorded response, at the prices
  of the serving config (``routers/cost.py``, as ``lookahead calibrate`` measures it), and
- the parameters activated per query: the chosen candidate's ``params_b`` from the same config.
Every single candidate, Random and the Oracle are marked, and the Pareto frontier (no other point
both cheaper and better) is drawn. For the routers named in ``curves`` the cost-weight sweep of
``lookahead calibrate`` gives a curve (from the first seed's scores).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from lookahead_router.analysis.run import ORACLE, TASK_BEST, Analysis, AnalysisError, BenchRun, Table, pyplot
from lookahead_router.evaluation.calibration import calibrate, realised_costs
from lookahead_router.evaluation.decisions import oracle_decisions
from lookahead_router.routers.cost import Price

RANDOM = "random"


def pareto(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """Names on the frontier of (cost, quality): sorted by cost, each better than every cheaper one."""
    front, best = [], -np.inf
    for name, (cost, quality) in sorted(points.items(), key=lambda kv: (kv[1][0], -kv[1][1])):
        if quality > best:
            front.append(name)
            best = quality
    return front


def analyze_cost(run: BenchRun, out_dir: Path, prices: Mapping[str, Price], params_b: Mapping[str, float | None],
                 routers: Sequence[str] | None = None, curves: Sequence[str] = (),
                 price_source: str = "the serving config") -> Analysis:
    routers = list(routers or run.routers)
    run.require(*routers, *curves)
    candidates = run.ds.candidates
    missing = [c for c in candidates if c not in prices]
    if missing:
        raise AnalysisError(f"{price_source}: no price for candidate(s) {missing}")
    dollars = realised_costs(run.ds, prices)                       # [n, T] $ per call
    params = np.array([params_b.get(c) or np.nan for c in candidates])
    rows_idx = np.arange(len(run.ds))
    choices = {**{r: run.choices[r] for r in routers},
               **{c: [np.full(len(run.ds), j)] for j, c in enumerate(candidates)},
               ORACLE: [oracle_decisions(run.ds).choice_for(run.ds)]}
    points = {}
    for name, per_seed in choices.items():
        points[name] = {"avg_mu_n": run.avg_mu_n(name),
                        "cost_per_1k": float(np.mean([dollars[rows_idx, c].mean() for c in per_seed]) * 1000),
                        "params_b": float(np.mean([params[c].mean() for c in per_seed]))}
    points[RANDOM] = {"avg_mu_n": run.avg_mu_n(RANDOM), "cost_per_1k": float(dollars.mean(axis=1).mean() * 1000),
                      "params_b": float(params.mean())}
    front = pareto({n: (p["cost_per_1k"], p["avg_mu_n"]) for n, p in points.items()})
    sweeps = {}
    for router in curves:
        files = sorted((run.folder / "decisions" / router / f"seed{run.seeds[0]}").glob("*.jsonl"))
        cal = calibrate(run.ds, prices, score_files=files, target_cost=float("inf"), price_source=price_source)
        sweeps[router] = [{k: p[k] for k in ("w", "cost_per_1k", "avg_mu_n")} for p in cal.points]
    kind = {n: "candidate" if n in candidates else "reference" if n in (ORACLE, RANDOM) else
            "lookup (benchmark label)" if n == TASK_BEST else "router" for n in points}
    table = Table("Average μn against cost and activated parameters",
                  ["row", "kind", "avg μn", "$ per 1k queries", "params per query (B)", "Pareto"],
                  [[n, kind[n], p["avg_mu_n"], f"{p['cost_per_1k']:.4f}", p["params_b"], "yes" if n in front else ""]
                   for n, p in sorted(points.items(), key=lambda kv: -kv[1]["avg_mu_n"])])
    _plot(points, kind, front, sweeps, out_dir)
    notes = [f"cost: prompt + the chosen candidate's recorded response at {price_source}'s prices (4 characters per "
             "token), averaged over queries and seeds; params: the chosen candidate's params_b (the router's own "
             "parameters, under 0.2 B, are left out)",
             "avg μn: the benchmark report's mean over seeds; Pareto: over the marked points (routers as run, "
             "candidates, references), not the cost-weight curves"]
    if sweeps:
        notes.append(f"cost-weight curves ({', '.join(sweeps)}): `lookahead calibrate`'s sweep on seed "
                     f"{run.seeds[0]}'s scores")
    if np.isnan(params).any():
        notes.append(f"no params_b for {[c for c, p in zip(candidates, params) if np.isnan(p)]}: their parameter "
                     "figures are –")
    return Analysis("cost", "Quality against cost (Table 6)",
                    {"points": points, "pareto": front, "curves": sweeps, "prices": price_source},
                    [table], ["cost_dollars.png", "cost_params.png"], notes)


def _plot(points: dict, kind: dict, front: list[str], sweeps: dict, out_dir: Path) -> None:
    plt = pyplot()
    style = {"router": ("o", "tab:blue"), "candidate": ("s", "tab:gray"), "reference": ("D", "tab:red"),
             "lookup (benchmark label)": ("^", "tab:orange")}
    for axis, label, name in (("cost_per_1k", "average $ per 1,000 queries", "cost_dollars.png"),
                              ("params_b", "parameters activated per query (B)", "cost_params.png")):
        fig, ax = plt.subplots(figsize=(8, 5.5))
        for n, p in points.items():
            marker, colour = style[kind[n]]
            ax.scatter(p[axis], p["avg_mu_n"], marker=marker, color=colour, zorder=3)
            ax.annotate(n, (p[axis], p["avg_mu_n"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if axis == "cost_per_1k":
            ax.plot([points[n][axis] for n in front], [points[n]["avg_mu_n"] for n in front], "--",
                    color="black", lw=1, label="Pareto frontier")
            for router, curve in sweeps.items():
                ax.plot([c["cost_per_1k"] for c in curve], [c["avg_mu_n"] for c in curve], "-", lw=1,
                        label=f"{router}, cost weight swept")
            ax.legend(fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("average μn")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
