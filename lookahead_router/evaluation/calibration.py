"""Pick the cost weight w (`lookahead calibrate`): sweep w on a routing dataset and measure what it
costs and what it loses.

Routing at weight w chooses, per query, argmax over candidates of P(good) − w · relative expected
cost (``routers/cost.py``); the expected cost uses the prices and a fixed expected output length,
as the proxy does. What a decision *costs* is measured on the candidates' recorded responses
instead: prompt tokens + tokens of the chosen candidate's actual response, at its prices. Quality is
the average μn over benchmarks (``evaluation/report.py``). w is picked on a dense grid (cheap: cost
and shares only), refined by bisection and rounded to a short number; μn is computed on a coarser
grid for the plot, and for the chosen w.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from lookahead_router.choices import check_choices, unknown_message
from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.errors import LookaheadError
from lookahead_router.evaluation.decisions import Decisions
from lookahead_router.routers.cost import Price, estimate_tokens, expected_costs, utilities

DENSE_POINTS = 2000   # cost and shares only: ~0.2 ms each on 8k queries
PLOT_POINTS = 50      # each also gets μn (~0.2 s each on the paper's data, plus ~6 s once)


class CalibrationError(LookaheadError):
    """Calibration inputs that cannot be used, or a target that cannot be met."""


def parse_share(text: str) -> tuple[str, float]:
    """'MODEL=FRACTION' -> (model, fraction in [0, 1]); 'MODEL=30%' is accepted too."""
    model, sep, value = text.rpartition("=")
    try:
        fraction = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        fraction = math.nan
    if not sep or not model or not 0 <= fraction <= 1:
        raise CalibrationError(f"--target-share expects MODEL=FRACTION with FRACTION in [0, 1], got {text!r}")
    return model, fraction


def format_weight(w: float) -> str:
    """Positional notation (PyYAML reads '1e-05' as a string, not a number)."""
    return np.format_float_positional(float(w), trim="-")


def _ceil_sig(w: float, digits: int) -> float:
    if w <= 0:
        return 0.0
    exponent = math.floor(math.log10(w)) - digits + 1
    return float(Decimal(w).quantize(Decimal(1).scaleb(exponent), rounding=ROUND_CEILING))


# ---- scores ---------------------------------------------------------------------------------
def scores_from_files(paths: Sequence[str | Path], ds: RoutingDataset, full: RoutingDataset | None = None
                      ) -> tuple[list[str], dict[str, list[float]]]:
    """Candidates (in the dataset's order) and scores by query id, merged from decisions files.
    Their ids must be queries of ``full`` (default ``ds``): the whole dataset, since the files may
    cover other benchmarks than the ones calibrated on, but not ids it lacks."""
    by_id: dict[str, list[float]] = {}
    origin: dict[str, Path] = {}
    keys: frozenset[str] | None = None
    candidates: list[str] = []
    for path in paths:
        dec = Decisions.load(path).check(full if full is not None else ds, str(path))
        for qid, row in zip(dec.ids, dec.scores):
            if not isinstance(row, dict) or not row:
                raise CalibrationError(f"{path}: the decision for id {qid!r} has no 'scores' field "
                                       "(calibration needs every candidate's score)")
            if keys is None:
                unknown = sorted(set(row) - set(ds.candidates))
                if unknown:
                    raise CalibrationError(f"{path}: scores for " + unknown_message("candidate", unknown,
                                                                                   ds.candidates))
                keys = frozenset(row)
                candidates = [c for c in ds.candidates if c in keys]
            elif frozenset(row) != keys:
                raise CalibrationError(f"{path}: id {qid!r} scores {sorted(row)}, other lines "
                                       f"{sorted(keys)}")
            try:
                vector = [float(row[c]) for c in candidates]
            except (TypeError, ValueError) as exc:
                raise CalibrationError(f"{path}: id {qid!r}: a score is not a number") from exc
            if qid in by_id and by_id[qid] != vector:
                raise CalibrationError(f"{path}: id {qid!r} is also in {origin[qid]} with other scores")
            by_id[qid], origin[qid] = vector, Path(path)
    if len(candidates) < 2:
        raise CalibrationError(f"scores cover {candidates}: calibration needs two candidates or more")
    return candidates, by_id


def scores_from_router(router_dir: str | Path, ds: RoutingDataset,
                       log: Callable[[str], None]) -> tuple[list[str], dict[str, list[float]]]:
    from lookahead_router.routers.base import Router
    router = Router.load(router_dir)
    unknown = [c for c in router.candidates if c not in ds.candidates]
    if unknown:
        raise CalibrationError(f"{router_dir}: the router's candidates {unknown} are not in the dataset "
                               f"({ds.candidates})")
    log(f"scoring {len(ds)} prompts with {router_dir}: in-sample if the router was trained on them "
        "(prefer out-of-fold --decisions from `lookahead benchmark`)")
    scores = router.score(ds.queries["prompt"].tolist())
    return list(router.candidates), dict(zip(ds.ids, scores.astype(float).tolist()))


# ---- the sweep ------------------------------------------------------------------------------
@dataclass
class Sweep:
    """Decisions, cost and shares at any w, for fixed scores and costs ([n, T] each)."""
    candidates: list[str]
    scores: np.ndarray
    expected: np.ndarray   # $ per call as routing estimates it
    realised: np.ndarray   # $ per call with the recorded response

    def choice(self, w: float) -> np.ndarray:
        return np.argmax(utilities(self.scores, self.expected, w), axis=1)  # ties: first candidate

    def summary(self, w: float | None = None, choice: np.ndarray | None = None) -> dict:
        choice = self.choice(w) if choice is None else choice
        rows = np.arange(len(choice))
        counts = np.bincount(choice, minlength=len(self.candidates))
        return {"cost_per_1k": float(self.realised[rows, choice].mean() * 1000),
                "expected_cost_per_1k": float(self.expected[rows, choice].mean() * 1000),
                "shares": {c: float(k / len(choice)) for c, k in zip(self.candidates, counts)}}

    def cost(self, w: float) -> float:
        choice = self.choice(w)
        return float(self.realised[np.arange(len(choice)), choice].mean() * 1000)

    def share(self, w: float, j: int) -> float:
        return float((self.choice(w) == j).mean())

    def top_weight(self) -> float:
        """The smallest w at which every query goes to its cheapest candidate(s); beyond it
        nothing changes. Per query: the largest score edge of a dearer candidate over the best
        cheapest one, divided by their relative-cost gap."""
        dearest = self.expected.max(axis=1, keepdims=True)
        rel = np.divide(self.expected, dearest, out=np.zeros_like(self.expected), where=dearest > 0)
        gap = rel - rel.min(axis=1, keepdims=True)
        cheap = gap <= 1e-12
        best_cheap = np.where(cheap, self.scores, -np.inf).max(axis=1, keepdims=True)
        need = np.divide(self.scores - best_cheap, gap, out=np.zeros_like(gap), where=~cheap)
        return float(max(need.max(initial=0.0), 0.0))

    def dense_grid(self, points: int = DENSE_POINTS) -> np.ndarray:
        top = self.top_weight()
        end = _ceil_sig(top * 1.001, 3) if top > 0 else 1.0
        return np.concatenate([[0.0], np.geomspace(end * 1e-4, end, points - 1)])

    def smallest(self, grid: np.ndarray, holds: Callable[[float], bool]) -> float | None:
        """The smallest w (to ~0.5%, then rounded to few digits) for which ``holds``; None if no
        grid point does. Bisects between the first grid point that holds and the one before."""
        ok = [holds(w) for w in grid]
        if not any(ok):
            return None
        k = ok.index(True)
        if k == 0:
            return float(grid[0])
        lo, hi = float(grid[k - 1]), float(grid[k])
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if holds(mid) else (mid, hi)
        for digits in range(1, 7):  # a short number for models.yaml, if one is as good
            w = _ceil_sig(hi, digits)
            if w <= grid[k] and holds(w):
                return w
        return hi


def realised_costs(ds: RoutingDataset, prices: Mapping[str, Price]) -> np.ndarray:
    """[n, T] $ per call with the candidate's recorded response as the output (its expected output
    length where no response is recorded)."""
    prompt_tokens = np.array([estimate_tokens(p) for p in ds.queries["prompt"]])
    out = np.empty(ds.responses.shape, dtype=float)
    for j, c in enumerate(ds.candidates):
        tokens = np.array([prices[c].expected_output_tokens if r is None else estimate_tokens(str(r))
                           for r in ds.responses[:, j]])
        out[:, j] = prices[c].call_cost(prompt_tokens, tokens)
    return out


# ---- the result -----------------------------------------------------------------------------
@dataclass
class Calibration:
    candidates: list[str]
    points: list[dict]                 # the plotted grid: w, costs, shares, mu_n, avg_mu_n
    chosen: dict                       # same fields + "target"
    references: dict                   # "candidates": {name: point}, "router_w0": point
    inputs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"chosen": self.chosen, "cost_weight_line": f"cost_weight: {format_weight(self.chosen['w'])}",
                "references": self.references, "points": self.points, "inputs": self.inputs}

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path = out_dir / "calibration.json"
        json_path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=True) + "\n")
        return json_path, self.plot(out_dir / "calibration.png")

    def plot(self, path: Path) -> Path:
        import matplotlib
        matplotlib.use("Agg")  # no display on servers; the file is all we need
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(8, 5.5))
        ax.plot([p["cost_per_1k"] for p in self.points], [p["avg_mu_n"] for p in self.points],
                "-o", ms=3, color="tab:blue", label="router, w swept")
        for name, p in self.references["candidates"].items():
            ax.scatter(p["cost_per_1k"], p["avg_mu_n"], color="tab:gray", zorder=3)
            ax.annotate(name, (p["cost_per_1k"], p["avg_mu_n"]), textcoords="offset points",
                        xytext=(5, 4), fontsize=8)
        w0 = self.references["router_w0"]
        ax.scatter(w0["cost_per_1k"], w0["avg_mu_n"], marker="s", color="tab:green", zorder=4,
                   label="router, w = 0")
        ax.scatter(self.chosen["cost_per_1k"], self.chosen["avg_mu_n"], marker="*", s=220,
                   color="tab:red", zorder=5, label=f"chosen, w = {format_weight(self.chosen['w'])}")
        if self.chosen["target"].get("cost_per_1k") is not None:
            ax.axvline(self.chosen["target"]["cost_per_1k"], ls="--", color="tab:red", lw=1,
                       label="target cost")
        ax.set_xlabel("average cost, $ per 1,000 queries (recorded responses)")
        ax.set_ylabel("average μn (% of the Random→Oracle gap)")
        ax.set_title(f"Quality vs cost on {self.inputs.get('queries', '?')} queries")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def calibrate(data: str | Path | RoutingDataset, prices: Mapping[str, Price], *,
              score_files: Sequence[str | Path] | None = None, router_dir: str | Path | None = None,
              target_cost: float | None = None, target_share: tuple[str, float] | None = None,
              benchmarks: Sequence[str] | None = None, alpaca_files: str | Path | None = None,
              price_source: str = "the serving config", plot_points: int = PLOT_POINTS,
              log: Callable[[str], None] = lambda m: None) -> Calibration:
    """Sweep w, pick the one that meets the target (exactly one of ``target_cost``, $ per 1,000
    queries, or ``target_share``, (model, fraction of calls))."""
    from lookahead_router.evaluation.report import CANDIDATES, default_benchmarks, evaluate
    from lookahead_router.precision import environment
    if (target_cost is None) == (target_share is None):
        raise CalibrationError("give exactly one target: a cost per 1,000 queries or a share of calls")
    if (score_files is None) == (router_dir is None):
        raise CalibrationError("give exactly one source of scores: decisions files or a router")
    ds = data if isinstance(data, RoutingDataset) else RoutingDataset.load(data)
    benchmarks = list(benchmarks) if benchmarks else default_benchmarks(ds)
    if not benchmarks:
        raise CalibrationError(f"no test benchmark in {data} (it has {ds.sources}); pass --benchmarks")
    check_choices("benchmark", benchmarks, ds.sources, CalibrationError, "benchmarks in the dataset")
    full, ds = ds, ds.where(source=benchmarks)
    if score_files is not None:
        candidates, by_id = scores_from_files(score_files, ds, full)
    else:
        candidates, by_id = scores_from_router(router_dir, ds, log)
    missing = [c for c in candidates if c not in prices]
    if missing:
        raise CalibrationError(f"{price_source}: no price for candidate(s) {missing}")
    ds = ds.select_candidates(candidates)
    notes = [] if router_dir is None else [f"scores from {router_dir}: in-sample for any query it was "
                                           "trained on"]
    scored = np.array([q in by_id for q in ds.ids])
    if not scored.any():
        raise CalibrationError(f"no query of {benchmarks} has scores (do the ids match {data}?)")
    # Cost and μn are measured on the same queries: those scored where every candidate answered.
    keep = scored & ds.available.all(axis=1)
    if (~scored).any():
        notes.append(f"{int((~scored).sum())} of {len(ds)} queries have no scores and are left out")
    if (scored & ~keep).any():
        notes.append(f"{int((scored & ~keep).sum())} scored queries lack a response from some "
                     "candidate and are left out")
    ds = ds.subset(keep)
    benchmarks = [b for b in benchmarks if b in ds.sources]
    prompts = ds.queries["prompt"].tolist()
    sweep = Sweep(candidates, np.array([by_id[q] for q in ds.ids], dtype=float),
                  expected_costs(prices, candidates, prompts), realised_costs(ds, prices))
    dense = sweep.dense_grid()

    if target_cost is not None:
        target = {"cost_per_1k": float(target_cost)}
        w = sweep.smallest(dense, lambda x: sweep.cost(x) <= target_cost * (1 + 1e-12))
        if w is None:
            cheapest = min(dense, key=sweep.cost)
            raise CalibrationError(f"no cost weight meets {target_cost:g} $ per 1,000 queries: the "
                                   f"cheapest routing (w = {format_weight(cheapest)}) costs "
                                   f"{sweep.cost(cheapest):.4g} $ per 1,000 queries")
    else:
        model, fraction = target_share
        if model not in candidates:
            raise CalibrationError(f"--target-share: {model!r} is not a candidate ({', '.join(candidates)})")
        j = candidates.index(model)
        target = {"model": model, "share": fraction}
        best_gap = min(abs(sweep.share(x, j) - fraction) for x in dense)
        w = sweep.smallest(dense, lambda x: abs(sweep.share(x, j) - fraction) <= best_gap + 1e-12)

    # The plotted grid: half geometric in w, half evenly spread along the cost axis.
    plot = set(np.geomspace(dense[1], dense[-1], plot_points // 2).tolist()) | {0.0, float(dense[-1])}
    dense_cost = np.array([sweep.cost(x) for x in dense])
    for level in np.linspace(dense_cost.max(), dense_cost.min(), plot_points - plot_points // 2):
        plot.add(float(dense[np.flatnonzero(dense_cost <= level + 1e-15)[0]]))
    grid = sorted({float(_ceil_sig(x, 4)) for x in plot} | {w})

    start = time.perf_counter()
    names = {x: f"w={format_weight(x)}" for x in grid}
    decisions = [Decisions(names[x], ds.ids, [candidates[k] for k in sweep.choice(x)]) for x in grid]
    report = evaluate(ds, routers=[CANDIDATES], decisions=decisions, benchmarks=benchmarks,
                      alpaca_files=alpaca_files)
    seconds = time.perf_counter() - start
    log(f"scored {len(grid)} weights on {len(ds)} queries in {seconds:.1f}s")

    def quality(row: str) -> dict:
        return {"mu_n": {b: report.rows[row][b]["mu_n"] for b in report.benchmarks},
                "avg_mu_n": report.avg_mu_n(row)}

    points = [{"w": x, **sweep.summary(x), **quality(names[x])} for x in grid]
    chosen = {"target": target, **next(p for p in points if p["w"] == w)}
    references = {"candidates": {c: {**sweep.summary(choice=np.full(len(ds), j)), **quality(c)}
                                 for j, c in enumerate(candidates)},
                  "router_w0": points[0]}
    inputs = {"data": str(data) if not isinstance(data, RoutingDataset) else "(in memory)",
              "scores": [str(p) for p in score_files or []], "router": str(router_dir) if router_dir else None,
              "benchmarks": report.benchmarks, "queries": len(ds), "notes": notes + report.notes,
              "prices": {c: asdict(prices[c]) for c in candidates}, "dense_grid_points": len(dense),
              "top_weight": float(dense[-1]), "evaluate_seconds": round(seconds, 2),
              "cost_model": "expected: prompt chars/4 tokens + expected_output_tokens; realised: "
                            "prompt chars/4 + recorded response chars/4 tokens",
              "environment": environment()}   # what a router's scores were computed on
    return Calibration(candidates, points, chosen, references, inputs)
