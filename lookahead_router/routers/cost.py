"""Cost-aware routing: utility = P(good) − w · relative cost (the paper's first stated limitation).

A candidate's cost for one call is what its provider charges for it, estimated before the call:
    cost_t = (prompt tokens · input price_t + expected output tokens_t · output price_t) / 1e6
with prices in $ per million tokens. Costs are divided by the dearest candidate's cost for the same
prompt, so the weight ``w`` is free of units: w = 0 routes on quality alone, and at w = 0.3 the
dearest candidate must be 30 points more likely to answer well than a free one to be chosen.
``lookahead calibrate`` picks the w that meets a target average cost or a target share of calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from lookahead_router.errors import LookaheadError

DEFAULT_OUTPUT_TOKENS = 512


class CostError(LookaheadError):
    """Costs or a cost weight that cannot be used."""


def estimate_tokens(text: str) -> int:
    """Tokens in ``text`` by the usual rule of thumb (4 characters per token): the candidates'
    own tokenizers are not at hand, and a cost estimate needs no more precision than this."""
    return max(1, (len(text) + 3) // 4)


@dataclass(frozen=True)
class Price:
    """What one candidate charges, in $ per million tokens."""
    input: float = 0.0
    output: float = 0.0
    expected_output_tokens: int = DEFAULT_OUTPUT_TOKENS

    def call_cost(self, prompt_tokens: int | np.ndarray, output_tokens: int | np.ndarray | None = None):
        out = self.expected_output_tokens if output_tokens is None else output_tokens
        return (np.asarray(prompt_tokens) * self.input + np.asarray(out) * self.output) / 1e6


@dataclass
class RouteDecision:
    """One prompt's routing decision."""
    model: str
    probabilities: dict[str, float]            # the router's score per candidate
    utilities: dict[str, float] = field(default_factory=dict)  # P(good) − w · relative cost
    cost_weight: float = 0.0

    def ranking(self) -> list[str]:
        """Candidates from the best utility to the worst (the order fallbacks follow)."""
        table = self.utilities or self.probabilities
        return sorted(table, key=lambda c: -table[c])


def expected_costs(prices: Mapping[str, Price], candidates: Sequence[str],
                   prompts: Sequence[str]) -> np.ndarray:
    """[n, T] estimated $ per call for each prompt and candidate."""
    missing = [c for c in candidates if c not in prices]
    if missing:
        raise CostError(f"no price for candidate(s) {missing}")
    tokens = np.array([estimate_tokens(p) for p in prompts])
    return np.stack([prices[c].call_cost(tokens) * np.ones(len(prompts)) for c in candidates], axis=1)


def utilities(scores: np.ndarray, costs: np.ndarray | Sequence[float] | None,
              cost_weight: float) -> np.ndarray:
    """[n, T] utilities. ``costs`` is [T] or [n, T] in any non-negative unit (normalised per row)."""
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(cost_weight) or cost_weight < 0:
        raise CostError(f"cost_weight must be a finite number >= 0, not {cost_weight}")
    if cost_weight == 0:
        return scores
    if costs is None:
        raise CostError("cost_weight > 0 needs the candidates' costs (prices in the serving config, "
                        "or costs= in Python)")
    costs = np.broadcast_to(np.asarray(costs, dtype=np.float64), scores.shape)
    if (costs < 0).any() or not np.isfinite(costs).all():
        raise CostError("costs must be finite and >= 0")
    dearest = costs.max(axis=1, keepdims=True)
    relative = np.divide(costs, dearest, out=np.zeros_like(costs), where=dearest > 0)
    return scores - cost_weight * relative


def decide(candidates: Sequence[str], scores: np.ndarray, costs=None,
           cost_weight: float = 0.0) -> list[RouteDecision]:
    """The highest-utility candidate per row, with every candidate's probability and utility."""
    util = utilities(scores, costs, cost_weight)
    out = []
    for row_scores, row_util in zip(np.asarray(scores), util):
        out.append(RouteDecision(
            model=candidates[int(np.argmax(row_util))],
            probabilities={c: float(s) for c, s in zip(candidates, row_scores)},
            utilities={c: float(u) for c, u in zip(candidates, row_util)},
            cost_weight=float(cost_weight)))
    return out
