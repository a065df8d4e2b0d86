"""Messages for values a user gave that are not among the valid choices (a source, a candidate,
a router, an option...): name each bad value, suggest what it most likely meant and list the
choices, so that a typo or a wrong case fails at once instead of selecting nothing."""

from __future__ import annotations

import difflib
from typing import Iterable, Sequence

from lookahead_router.errors import LookaheadError


def suggest(value: str, choices: Iterable[str]) -> str | None:
    """The choice ``value`` most likely meant: the same letters in another case first (ids and
    benchmark names are case-sensitive, people's typing is not), else a close spelling."""
    choices = [str(c) for c in choices]
    folded = str(value).casefold()
    same = [c for c in choices if c.casefold() == folded]
    if same:
        return same[0]
    ratio = {c: difflib.SequenceMatcher(None, str(value), c).ratio() for c in choices}
    close = sorted((c for c in choices if ratio[c] >= 0.75), key=ratio.get, reverse=True)
    # only a clear favourite: "model-z" is as near model-a as model-c, so it means neither
    if close and (len(close) == 1 or ratio[close[0]] > ratio[close[1]]):
        return close[0]
    return None


def _named(value: str, choices: Sequence[str]) -> str:
    guess = suggest(value, choices)
    return f"{value} (did you mean {guess}?)" if guess else str(value)


def unknown_message(what: str, values: Sequence[str], choices: Sequence[str], plural: str | None = None,
                    listed: bool = True) -> str:
    """E.g. "MT-bench: no such source; did you mean MT-Bench? sources: GSM8K, MATH, MT-Bench".
    ``listed=False`` leaves the choices out (too many to list, e.g. query ids)."""
    plural = plural or what + "s"
    choices = [str(c) for c in choices]
    tail = f"{plural}: {', '.join(choices)}" if listed else ""
    if len(values) == 1:
        guess = suggest(values[0], choices)
        head = f"{values[0]}: no such {what}" + (f"; did you mean {guess}?" if guess else "")
    else:
        head = f"no such {plural}: {', '.join(_named(v, choices) for v in values)}"
    return head + (" " if head.endswith("?") else "; ") + tail if tail else head


def check_choices(what: str, values: Iterable[str], choices: Sequence[str], error: type[Exception] = LookaheadError,
                  plural: str | None = None) -> None:
    """Raise ``error`` naming every value of ``values`` that is not in ``choices``."""
    known = set(choices)
    unknown = list(dict.fromkeys(str(v) for v in values if v not in known))
    if unknown:
        raise error(unknown_message(what, unknown, list(choices), plural))
