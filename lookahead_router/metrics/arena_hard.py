"""Arena-Hard: Bradley-Terry win rate against the gpt-4-0314 baseline from the judged games.

Arena-Hard-Auto (v0.1) turns each of a model's two games per question into battles against the
baseline: a verdict of A>>B or B>>A counts `STRONG_WEIGHT` (3) times, a tie counts as half a win,
an unparsable verdict (None) is dropped. It then fits a Bradley-Terry model by logistic regression
with the baseline anchored. With only model-vs-baseline battles the maximum-likelihood rating of a
model against the anchor has a closed form: the weighted share of battles it wins, ties counting
half. `bt_win_rate` returns that MLE; tests check it against the logistic-regression fit.
"""

from __future__ import annotations

from typing import Iterable, Sequence

STRONG_WEIGHT = 3
BASELINE = "gpt-4-0314"

# Verdicts with the baseline as assistant A (game 1): (candidate's win share, battle weight).
_GAME1 = {"A>>B": (0.0, STRONG_WEIGHT), "A>B": (0.0, 1), "A=B": (0.5, 1),
          "B>A": (1.0, 1), "B>>A": (1.0, STRONG_WEIGHT)}


def game_battles(verdict: str | None, game_index: int) -> tuple[float, float]:
    """(weighted wins, weight) the candidate gets from one game. Game 2 swaps the positions."""
    if verdict not in _GAME1:
        return 0.0, 0.0
    share, weight = _GAME1[verdict]
    if game_index % 2 == 1:
        share = 1.0 - share
    return share * weight, float(weight)


def bt_win_rate(games_per_query: Iterable[Sequence[str | None]]) -> float:
    """Win rate (in %) against the baseline of a model whose games are given per query."""
    wins = total = 0.0
    for games in games_per_query:
        for g, verdict in enumerate(games or []):
            w, t = game_battles(verdict, g)
            wins, total = wins + w, total + t
    if total == 0:
        return float("nan")
    return 100.0 * wins / total
