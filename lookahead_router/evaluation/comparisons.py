"""Paired comparisons of two routers: the difference in average μn with a 95% interval from a
paired bootstrap over queries within each benchmark, pooled over seeds.

One bootstrap replicate draws, in every benchmark, its queries with replacement; the same draw
serves both routers, every seed (the queries are the same in each seed; only fold assignments and
initialisations change) and the reference rows, so Random and Oracle -- hence μn -- are
recomputed on the drawn queries. Per benchmark, μn is averaged over seeds; the difference of the
two routers' averages over benchmarks is the replicate's value. Native metrics are ratios of
per-query sums (``Metric.parts``); AlpacaEval's GLM is fitted once per decision set, and the
bootstrap resamples its per-query length-controlled win probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.evaluation.decisions import Decisions
from lookahead_router.metrics.native import metric_for, oracle_choice

N_BOOTSTRAP = 2000


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    diff: float                      # avg μn of a minus b (means over seeds)
    low: float                       # 95% paired-bootstrap interval
    high: float
    per_benchmark: dict[str, float]  # μn of a minus b per benchmark (means over seeds)

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "diff": self.diff, "ci95": [self.low, self.high],
                "per_benchmark": self.per_benchmark}

    def line(self) -> str:
        verdict = "above 0" if self.low > 0 else "below 0" if self.high < 0 else "includes 0"
        return (f"| {self.a} − {self.b} | {self.diff:+.1f} | [{self.low:+.1f}, {self.high:+.1f}] | {verdict} | "
                + " | ".join(f"{v:+.1f}" for v in self.per_benchmark.values()) + " |")


def _mu_n(mu: np.ndarray, random: np.ndarray, oracle: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (mu - random) / (oracle - random) * 100


def _ratio(parts: tuple[np.ndarray, np.ndarray], draws: np.ndarray) -> np.ndarray:
    numerator, denominator = parts
    with np.errstate(invalid="ignore", divide="ignore"):
        return numerator[draws].sum(1) / denominator[draws].sum(1)


def compare(ds: RoutingDataset, benchmarks: Sequence[str], decisions: Mapping[str, Sequence[Decisions]],
            pairs: Sequence[tuple[str, str]], n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> list[Comparison]:
    """``decisions``: per row, one Decisions per seed. Each benchmark is scored on the queries
    every candidate answered and every decisions set covers, as ``evaluate`` does."""
    rng = np.random.default_rng(seed)
    names = sorted({n for pair in pairs for n in pair})
    draws_mu_n = {n: [] for n in names}      # per benchmark: [n_bootstrap] μn, mean over seeds
    point = {n: {} for n in names}
    for bench in benchmarks:
        part = ds.where(source=bench)
        choices = {n: [d.choice_for(part) for d in decisions[n]] for n in names}
        keep = part.available.all(axis=1)
        for per_seed in choices.values():
            for c in per_seed:
                keep &= c >= 0
        part = part.subset(keep)
        metric = metric_for(bench, part)
        draws = rng.integers(0, len(part), size=(n_bootstrap, len(part)))
        everyone = np.arange(len(part))[None]
        fixed = [metric.parts(np.full(len(part), j)) for j in range(len(part.candidates))]
        oracle = metric.parts(oracle_choice(metric))
        random_b, oracle_b = np.mean([_ratio(f, draws) for f in fixed], 0), _ratio(oracle, draws)
        random_0, oracle_0 = np.mean([_ratio(f, everyone) for f in fixed]), _ratio(oracle, everyone)[0]
        for n in names:
            seed_parts = [metric.parts(c[keep]) for c in choices[n]]
            # a draw on which Oracle ties Random has no μn (tiny benchmarks): NaN, left out below
            draws_mu_n[n].append(np.mean([_mu_n(_ratio(p, draws), random_b, oracle_b) for p in seed_parts], 0))
            point[n][bench] = float(np.mean([_mu_n(_ratio(p, everyone)[0], random_0, oracle_0) for p in seed_parts]))
    out = []
    for a, b in pairs:
        diffs = np.mean(draws_mu_n[a], 0) - np.mean(draws_mu_n[b], 0)
        low, high = np.nanpercentile(diffs, [2.5, 97.5])
        per = {bench: point[a][bench] - point[b][bench] for bench in benchmarks}
        out.append(Comparison(a, b, float(np.mean(list(per.values()))), float(low), float(high), per))
    return out


def comparisons_markdown(comparisons: Sequence[Comparison], benchmarks: Sequence[str], seeds: int) -> str:
    header = "| comparison | Δ avg μn | 95% CI | interval | " + " | ".join(f"Δ {b}" for b in benchmarks) + " |"
    lines = [header, "|" + "---|" * (4 + len(benchmarks))] + [c.line() for c in comparisons]
    return "\n".join(lines + ["", f"- paired bootstrap over queries within each benchmark ({N_BOOTSTRAP} "
                                  f"replicates), pooled over {seeds} seed(s); AlpacaEval resamples the "
                                  "GLM's per-query LC win probabilities"])
