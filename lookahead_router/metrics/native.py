"""Each benchmark's native metric (paper Appendix B), computed over the responses a router picks.

A metric is bound to one benchmark's rows of a RoutingDataset and maps a choice (candidate index
per row) to the benchmark's original score mu_o. `oracle_choice` picks per query the best-scoring
candidate; `normalised` turns mu_o into mu_n against Random and Oracle.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.metrics.alpaca_lc import LengthControlledWinRate
from lookahead_router.metrics.arena_hard import battle_totals, bt_win_rate


class Metric:
    """mu_o of a benchmark for a choice of candidate per row."""

    def __init__(self, ds: RoutingDataset):
        self.ds = ds

    def per_query(self) -> np.ndarray:
        """[n, T] per-query quality of each candidate's response (NaN when missing)."""
        return self.ds.scores

    def __call__(self, choice: np.ndarray) -> float:
        numerator, denominator = self.parts(choice)
        return float(numerator.sum() / denominator.sum())

    def parts(self, choice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-query (numerator, denominator) with mu_o = sum(numerator) / sum(denominator): a
        bootstrap over queries recomputes mu_o from resampled rows of these."""
        raise NotImplementedError


class MeanScore(Metric):
    """Accuracy / pass@1 (scores 0/1) or mean unit-test pass rate, in %. A missing response fails."""

    def parts(self, choice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        picked = self.ds.scores[np.arange(len(self.ds)), choice]
        return np.nan_to_num(picked) * 100, np.ones(len(picked))


class MTBench(Metric):
    """Mean GPT-4 rating (1-10) over both turns of the picked conversations."""

    @cached_property
    def _turns(self) -> np.ndarray:
        out = np.full(self.ds.scores.shape + (2,), np.nan)
        for i in range(len(self.ds)):
            turns = self.ds.payload(i).get("turn_scores", {})
            for j, c in enumerate(self.ds.candidates):
                if c in turns:
                    out[i, j] = [np.nan if s is None else s for s in turns[c]]
        return out

    def per_query(self) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.nanmean(self._turns, axis=2)

    def parts(self, choice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        picked = self._turns[np.arange(len(self.ds)), choice]
        return np.nansum(picked, axis=1), (~np.isnan(picked)).sum(axis=1).astype(float)


class ArenaHard(Metric):
    """Bradley-Terry win rate (%) against gpt-4-0314 from the picked responses' judged games."""

    def __call__(self, choice: np.ndarray) -> float:
        return bt_win_rate(self._games(choice))

    def _games(self, choice: np.ndarray) -> list:
        return [self.ds.payload(i).get("games", {}).get(self.ds.candidates[j]) for i, j in enumerate(choice)]

    def parts(self, choice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # the closed-form Bradley-Terry win rate is a ratio of sums over queries (see arena_hard)
        wins, weights = np.array([battle_totals(games) for games in self._games(choice)]).reshape(-1, 2).T
        return 100 * wins, weights


class AlpacaEval(Metric):
    """Length-controlled win rate (%) against the GPT-4-turbo reference."""

    def __init__(self, ds: RoutingDataset, files_dir: str | Path | None = None, hub: bool = False):
        super().__init__(ds)
        payloads = [ds.payload(i) for i in range(len(ds))]
        lengths = np.array([[np.nan if r is None else len(r) for r in row] for row in ds.responses])
        self.lc = LengthControlledWinRate(
            preferences=ds.scores, output_lengths=lengths,
            reference_lengths=np.array([len(p.get("reference") or "") for p in payloads], dtype=float),
            index=np.array([p.get("index", i) for i, p in enumerate(payloads)]),
            files_dir=files_dir, hub=hub)

    @property
    def method(self) -> str:
        return self.lc.method

    def __call__(self, choice: np.ndarray) -> float:
        return self.lc(choice)

    def parts(self, choice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities = self.lc.per_query(choice)
        return 100 * probabilities, np.ones(len(probabilities))


@dataclass(frozen=True)
class BenchmarkInfo:
    metric: str
    decimals: int


BENCHMARKS = {
    "AlpacaEval": BenchmarkInfo("LC win rate", 1),
    "ArenaHard": BenchmarkInfo("win rate vs gpt-4-0314", 1),
    "MT-Bench": BenchmarkInfo("GPT-4 rating 1-10", 2),
    "GSM8K": BenchmarkInfo("accuracy", 1),
    "MATH": BenchmarkInfo("accuracy", 1),
    "HumanEval": BenchmarkInfo("pass@1", 1),
    "MBPP": BenchmarkInfo("pass@1", 1),
    "SelfOSS": BenchmarkInfo("test pass rate", 1),
}
_OWN_DATA = BenchmarkInfo("mean score x 100", 1)  # a user's own source


def benchmark_info(source: str) -> BenchmarkInfo:
    """Metric name and printed decimals of ``source`` (any unknown source: the mean raw score)."""
    return BENCHMARKS.get(source, _OWN_DATA)


def metric_for(source: str, ds: RoutingDataset, alpaca_files: str | Path | None = None,
               alpaca_hub: bool = False) -> Metric:
    """The native metric of ``source`` over ``ds`` (which must hold only that source's rows).

    Unknown sources (a user's own data) fall back to the mean raw score x 100.
    """
    if source == "AlpacaEval":
        return AlpacaEval(ds, alpaca_files, alpaca_hub)
    if source == "ArenaHard":
        return ArenaHard(ds)
    if source == "MT-Bench":
        return MTBench(ds)
    return MeanScore(ds)


def oracle_choice(metric: Metric) -> np.ndarray:
    """Per query the candidate with the highest routing score; ties go to the higher native
    per-query quality (e.g. the two-turn MT-Bench mean when turn-1 ratings tie), then to the
    earlier candidate."""
    scores = np.where(np.isnan(metric.ds.scores), -np.inf, metric.ds.scores)
    quality = np.nan_to_num(metric.per_query(), nan=-np.inf)
    best = scores.max(axis=1, keepdims=True)
    quality = np.where(scores == best, quality, -np.inf)
    return np.argmax(quality, axis=1)


def normalised(mu_o: float, mu_random: float, mu_oracle: float) -> float:
    """mu_n = (mu_o - mu_o(Random)) / (mu_o(Oracle) - mu_o(Random)) x 100."""
    gap = mu_oracle - mu_random
    return float("nan") if gap == 0 else (mu_o - mu_random) / gap * 100.0
