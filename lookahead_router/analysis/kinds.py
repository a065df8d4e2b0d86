"""`lookahead analyze KIND`: load the benchmark folder, run one analysis, write OUT/KIND/.

Reading decisions only: shares, difficulty, cost, cases. Training again (``retrain.py``): pool,
efficiency, sweep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from lookahead_router.analysis.run import Analysis, AnalysisError, BenchRun

KINDS = ("shares", "difficulty", "cost", "pool", "efficiency", "sweep", "cases")
RETRAINING = {"pool", "efficiency", "sweep"}
# What an analysis records of the run it read (benchmark.py writes them with every run).
ENVIRONMENT_KEYS = ("device", "precision", "precision_setting", "native_bf16", "cpu_flags")


def run_analysis(kind: str, bench: str | Path, data: str | Path, out: str | Path, *,
                 routers: Sequence[str] = (), a: str | None = None, b: str | None = None,
                 config: str | Path | None = None, curves: Sequence[str] = (), limit: int = 6,
                 router: str = "lookahead-mlm", fractions: Sequence[float] = (0.1, 0.25, 0.5),
                 grid: dict[str, Sequence[float]] | None = None, sizes: Sequence[int] = (3, 4, 5),
                 all_subsets: bool = False, router_cost: str | Path | None = None,
                 seeds: Sequence[int] | None = None, folds: Sequence[int] | None = None,
                 work: str | Path | None = None, log: Callable[[str], None] = print,
                 progress: bool = True) -> tuple[Analysis, Path]:
    """Run ``kind`` on the benchmark folder ``bench``; returns the analysis and its markdown file."""
    if kind not in KINDS:
        raise AnalysisError(f"unknown analysis {kind!r}; choose from {', '.join(KINDS)}")
    if kind == "cost" and config is None:
        raise AnalysisError("cost needs --config: a serving config (models.yaml) with the candidates' prices")
    from lookahead_router.data.dataset import RoutingDataset
    ds = RoutingDataset.load(data)
    run = BenchRun.load(bench, ds)
    out_dir = Path(out) / kind
    out_dir.mkdir(parents=True, exist_ok=True)
    if kind in RETRAINING:
        from lookahead_router.analysis import retrain
        rt = retrain.Retrainer(run, ds, Path(work) if work else Path("runs/analyses-work") / kind, seeds, folds,
                               log, progress)
        if kind == "pool":
            analysis = retrain.analyze_pool(rt, out_dir, list(routers) or ["mlc-mlm", router], sizes, all_subsets,
                                            Path(router_cost) if router_cost else None)
        elif kind == "efficiency":
            analysis = retrain.analyze_efficiency(rt, out_dir, router, fractions)
        else:
            analysis = retrain.analyze_sweep(rt, out_dir, router, grid or retrain.SWEEP_DEFAULTS)
    elif kind == "shares":
        from lookahead_router.analysis.shares import analyze_shares
        analysis = analyze_shares(run, out_dir, routers or None)
    elif kind == "difficulty":
        from lookahead_router.analysis.difficulty import analyze_difficulty
        analysis = analyze_difficulty(run, out_dir, a, b)
    elif kind == "cases":
        from lookahead_router.analysis.cases import analyze_cases
        analysis = analyze_cases(run, out_dir, a, b, limit)
    else:
        from lookahead_router.analysis.cost import analyze_cost
        from lookahead_router.catalogue import load_config
        models = load_config(config).models
        analysis = analyze_cost(run, out_dir, {n: m.price for n, m in models.items()},
                                {n: m.params_b for n, m in models.items()}, routers or None, curves,
                                price_source=str(config))
    analysis.environment = {"run": {k: run.report["run"].get(k) for k in ENVIRONMENT_KEYS}}
    if kind in RETRAINING:
        from lookahead_router.precision import environment
        analysis.environment["retrained"] = environment()
    return analysis, analysis.write(out_dir)
