"""Arena-Hard: Bradley-Terry win rate against the gpt-4-0314 baseline from the judged games.

As in Arena-Hard-Auto (v0.1) and the paper's evaluation code, each of a model's two games per
question becomes battles against the baseline: a strong verdict (A>>B, B>>A) counts
`STRONG_WEIGHT` = 3 times and a tie half a win. A game whose verdict the judge left unparsable
(None) counts as a strong loss, as the paper's code does; Arena-Hard-Auto's own show_result drops
it instead (``unparsable="drop"``). A Bradley-Terry model is then fitted by logistic regression
with the baseline anchored; with only model-vs-baseline battles its maximum-likelihood win rate
has a closed form, the weighted share of battles won (ties half). `bt_win_rate` returns it; a
test checks it against the logistic-regression fit.
"""

from __future__ import annotations

from typing import Iterable, Sequence

STRONG_WEIGHT = 3

# Verdicts with the baseline as assistant A (game 1): (candidate's win share, battle weight).
_GAME1 = {"A>>B": (0.0, STRONG_WEIGHT), "A>B": (0.0, 1), "A=B": (0.5, 1),
          "B>A": (1.0, 1), "B>>A": (1.0, STRONG_WEIGHT)}
_STRONG_LOSS = (0.0, STRONG_WEIGHT)


def _battle(verdict: str | None, game_index: int, unparsable: str) -> tuple[float, float] | None:
    """(candidate's win share, weight) of one game; game 2 swaps the positions."""
    if verdict not in _GAME1:
        return _STRONG_LOSS if unparsable == "loss" else None
    share, weight = _GAME1[verdict]
    return (1.0 - share if game_index % 2 else share), weight


def game_value(verdict: str | None, game_index: int) -> float:
    """Per-game routing score from the candidate's side: +3 / +1 / 0 / -1 / -3 (unparsable -3)."""
    share, weight = _battle(verdict, game_index, "loss")
    return (2 * share - 1) * weight


def battle_totals(games: Sequence[str | None] | None, unparsable: str = "loss") -> tuple[float, float]:
    """(weighted wins, total battle weight) of one query's games."""
    wins = total = 0.0
    for g, verdict in enumerate(games or []):
        battle = _battle(verdict, g, unparsable)
        if battle is not None:
            wins, total = wins + battle[0] * battle[1], total + battle[1]
    return wins, total


def bt_win_rate(games_per_query: Iterable[Sequence[str | None]], unparsable: str = "loss") -> float:
    """Win rate (in %) against the baseline of a model whose games are given per query."""
    if unparsable not in ("loss", "drop"):
        raise ValueError(f"unparsable must be 'loss' or 'drop', not {unparsable!r}")
    wins = total = 0.0
    for games in games_per_query:
        w, t = battle_totals(games, unparsable)
        wins, total = wins + w, total + t
    if total == 0:
        return float("nan")
    return 100.0 * wins / total
