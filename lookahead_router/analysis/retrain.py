"""The analyses that train again, each a narrowed `lookahead benchmark` under the run's protocol,
preset, seeds and router options, so its numbers compare with the run's:

- ``pool`` (the paper's Table 8): the candidate pool cut to its first k (or every k-subset);
- ``efficiency`` (Figures 5a / 6a): each training fold cut to a fraction, for a router and its
  λ = 0 ablation;
- ``sweep`` (Figure 7): one option of a Lookahead router varied at a time (λ = rm_weight, m, alpha).

Every point's decisions live under ``WORK/<point>/decisions`` (``--work``, default
runs/analyses-work/KIND) and finished folds are reused, so an interrupted analysis resumes. A point
identical to the run itself (the full pool, 100% of the data, a router's own option value) reads
the run's decisions instead of training again (and trains any fold the run lacks into them).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lookahead_router.analysis.run import Analysis, AnalysisError, BenchRun, Table, pyplot
from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.evaluation.benchmark import run_benchmark
from lookahead_router.precision import resolve_precision
from lookahead_router.routers.registry import make_router

SWEEP_DEFAULTS = {"rm_weight": (0.0, 0.1, 0.2, 0.5, 1.0), "m": (4, 8, 16), "alpha": (0.2, 0.4, 0.6)}


class Retrainer:
    """Runs narrowed benchmarks that share the finished run's settings."""

    def __init__(self, run: BenchRun, data: RoutingDataset, work_dir: Path, seeds: Sequence[int] | None = None,
                 folds: Sequence[int] | None = None, log: Callable[[str], None] = print, progress: bool = True):
        self.run, self.work_dir, self.log, self.progress = run, Path(work_dir), log, progress
        self.meta = run.report["run"]
        self.data = data.select_candidates(self.meta.get("candidates", data.candidates))
        self.seeds = list(seeds or self.meta["seeds"])
        self.folds = None if folds is None else list(folds)
        ran_in, now = self.meta.get("precision"), resolve_precision()
        if ran_in is not None and ran_in != now:   # points in two precisions are not one curve
            raise AnalysisError(f"{run.folder} was run with the torch engine in {ran_in}; this process "
                                f"computes in {now}: run `lookahead --precision {ran_in} analyze ...`")

    def options(self, router: str) -> dict:
        if router not in self.meta["router_options"]:
            raise AnalysisError(f"{self.run.folder} did not train {router}; it trained "
                                f"{', '.join(self.meta['router_options'])}")
        return dict(self.meta["router_options"][router])

    def avg_mu_n(self, point: str, routers: Sequence[str], overrides: dict | None = None,
                 candidates: Sequence[str] | None = None, train_fraction: float = 1.0,
                 reuse: bool = False) -> dict[str, tuple[float, float]]:
        """router -> (mean, std over seeds) of average μn at one point of the analysis."""
        ds = self.data if candidates is None else self.data.select_candidates(list(candidates))
        options = {r: {**self.options(r), **(overrides or {}).get(r, {})} for r in routers}
        report, _ = run_benchmark(ds, list(routers), self.meta["protocol"], self.meta["preset"],
                                  self.work_dir / point, self.seeds, self.meta["add_train"], options,
                                  self.progress, self.log, folds=self.folds, train_fraction=train_fraction,
                                  decisions_dir=self.run.folder / "decisions" if reuse else None)
        return {r: (report.avg_mu_n(r), report.avg_std.get(r, 0.0)) for r in routers}

    def describe(self) -> str:
        folds = "every fold" if self.folds is None else f"folds {self.folds}"
        return (f"retrained under the run's protocol ({self.meta['protocol']}, {folds}), preset "
                f"({self.meta['preset']}), router options and seeds {self.seeds}; μn: mean ± std over seeds")


# ---- pool ---------------------------------------------------------------------------------
def analyze_pool(rt: Retrainer, out_dir: Path, routers: Sequence[str], sizes: Sequence[int], all_subsets: bool = False,
                 router_cost: Path | None = None) -> Analysis:
    candidates = rt.data.candidates
    bad = [k for k in sizes if not 2 <= k <= len(candidates)]
    if bad:
        raise AnalysisError(f"pool sizes {bad} outside 2..{len(candidates)} (the run's candidates)")
    cost = _router_cost(router_cost)
    rows, summary = [], []
    for k in sizes:
        pools = list(itertools.combinations(candidates, k)) if all_subsets else [tuple(candidates[:k])]
        for i, pool in enumerate(pools):
            full = k == len(candidates)
            result = rt.avg_mu_n(f"pool{k}-{i}", routers, candidates=pool, reuse=full)
            for r in routers:
                c = cost.get((r, k), {})
                summary.append({"size": k, "pool": list(pool), "router": r, "avg_mu_n": result[r][0],
                                "avg_mu_n_std": result[r][1], "gflops": c.get("gflops"), "p50_ms": c.get("p50_ms")})
                rows.append([k, ", ".join(pool), r, _pm(*result[r]), _num(c.get("gflops"), 2), _num(c.get("p50_ms"), 1)])
    table = Table("μn by candidate pool", ["k", "pool", "router", "avg μn", "GFLOPs / query",
                                           "p50 ms (batch 1, all candidates)"], rows)
    _plot_lines({r: [(s["size"], s["avg_mu_n"], s["avg_mu_n_std"]) for s in summary if s["router"] == r and
                     (not all_subsets or s["pool"] == candidates[:s["size"]])] for r in routers},
                "candidates in the pool (the first k)", out_dir / "pool.png")
    notes = [rt.describe(), "pools: " + ("every subset of each size" if all_subsets else "the first k candidates in "
                                          "the run's order"),
             f"GFLOPs and latency: {router_cost}" if cost else "no router-cost file given (--router-cost)"]
    return Analysis("pool", "Size of the candidate pool (Table 8)", {"points": summary}, [table], ["pool.png"], notes)


def _router_cost(path: Path | None) -> dict[tuple[str, int], dict]:
    """(router, pool size) -> GFLOPs and p50 ms, from a `bench/router_cost.py` JSON (its torch rows)."""
    if path is None:
        return {}
    if not Path(path).is_file():
        raise AnalysisError(f"{path}: no such router-cost file")
    out = {}
    for r in json.loads(Path(path).read_text()).get("results", []):
        if (r.get("engine") or "torch") == "torch":
            for k, g in (r.get("gflops") or {}).items():
                out[(r["router"], int(k))] = {"gflops": g, "p50_ms": r.get("p50_ms")}
    return out


# ---- efficiency ---------------------------------------------------------------------------
def analyze_efficiency(rt: Retrainer, out_dir: Path, router: str, fractions: Sequence[float]) -> Analysis:
    ablation = f"{router}-norm"
    fractions = sorted(set(fractions) | {1.0})
    curves: dict[str, list] = {router: [], ablation: []}
    for f in fractions:
        result = rt.avg_mu_n(f"fraction{f:g}", [router, ablation], train_fraction=f, reuse=f == 1.0)
        for r in curves:
            curves[r].append((f, *result[r]))
    ratio = efficiency_ratio([(f, m) for f, m, _ in curves[router]], curves[ablation][-1][1])
    table = Table("Average μn by share of each training fold", ["fraction", router, f"{ablation} (λ = 0)"],
                  [[f"{f:g}", _pm(m, s), _pm(m0, s0)] for (f, m, s), (_, m0, s0) in zip(curves[router], curves[ablation])])
    _plot_lines({r: pts for r, pts in curves.items()}, "share of each training fold", out_dir / "efficiency.png",
                log_x=True)
    notes = [rt.describe(), "data-efficiency ratio: 1 / the smallest fraction at which the router with response "
             f"modelling matches the λ = 0 router trained on all the data (linear between measured fractions): "
             f"{ratio['text']}"]
    return Analysis("efficiency", "Sample efficiency with and without response modelling (Figures 5a / 6a)",
                    {"router": router, "ablation": ablation, "curves": curves, "ratio": ratio}, [table],
                    ["efficiency.png"], notes)


def efficiency_ratio(curve: Sequence[tuple[float, float]], target: float) -> dict:
    """1 / the smallest fraction where ``curve`` (fraction, μn; ascending) reaches ``target``."""
    (f0, m0) = curve[0]
    if m0 >= target:
        return {"ratio": 1 / f0, "bound": "at least", "text": f"at least {1 / f0:.1f}× (already matched at {f0:g})"}
    for (fa, ma), (fb, mb) in zip(curve, curve[1:]):
        if mb >= target:
            f = fa + (target - ma) / (mb - ma) * (fb - fa)
            return {"ratio": 1 / f, "bound": "estimate", "text": f"{1 / f:.1f}× (matched at {f:.2f} of the data)"}
    return {"ratio": None, "bound": "not reached", "text": "not reached: with all the data, response modelling stays "
            f"below the λ = 0 router ({curve[-1][1]:.1f} < {target:.1f})"}


# ---- sweep --------------------------------------------------------------------------------
def analyze_sweep(rt: Retrainer, out_dir: Path, router: str, grid: dict[str, Sequence[float]]) -> Analysis:
    own = make_router(router, **rt.options(router)).config.flat()
    unknown = [p for p in grid if p not in own]
    if unknown:
        raise AnalysisError(f"{router} has no option(s) {unknown}")
    curves, rows = {}, []
    for param, values in grid.items():
        curves[param] = []
        for v in values:
            norm = f"{router}-norm"
            if param == "rm_weight" and v == 0 and norm in rt.meta["router_options"]:
                name, result = norm, rt.avg_mu_n(f"{param}-0", [norm], reuse=True)[norm]   # λ = 0 is the ablation row
            else:
                same = v == own[param]
                name = router
                result = rt.avg_mu_n(f"{param}-{v:g}", [router], None if same else {router: {param: v}}, reuse=same)[router]
            curves[param].append((v, *result))
            rows.append([param, f"{v:g}" + (" (the run's)" if v == own[param] else ""), name, _pm(*result)])
    table = Table(f"Sensitivity of {router}", ["option", "value", "row", "avg μn"], rows)
    figures = []
    for param, pts in curves.items():
        _plot_lines({router: pts}, param, out_dir / f"sweep_{param}.png")
        figures.append(f"sweep_{param}.png")
    notes = [rt.describe(), "sensitivity curves only: they read test folds, so they are not used for model "
             "selection, which stays on validation splits", "one option varied at a time, the others at the run's values"]
    return Analysis("sweep", f"Sensitivity to λ, m and α (Figure 7): {router}", {"router": router, "curves": curves},
                    [table], figures, notes)


# ---- shared -------------------------------------------------------------------------------
def _pm(mean: float, std: float) -> str:
    return "–" if np.isnan(mean) else f"{mean:.1f}" + (f" ± {std:.1f}" if std else "")


def _num(x, decimals: int) -> str:
    return "–" if x is None else f"{x:.{decimals}f}"


def _plot_lines(curves: dict[str, list], xlabel: str, path: Path, log_x: bool = False) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, pts in curves.items():
        xs, ys, errs = zip(*pts) if pts else ((), (), ())
        ax.errorbar(xs, ys, yerr=errs if any(errs) else None, marker="o", capsize=3, label=name)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("average μn")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
