"""Math answers: extract a response's final answer and check it against the reference with
math-verify (symbolic equivalence: ``\\frac{1}{2}`` == ``0.5``, ``\\$18`` == ``18``, intervals, sets);
for text answers it cannot compare ("4:30 p.m.", "\\text{east}") a normalised string match counts.

Threading: math-verify guards each parse/verify with ``signal.alarm``, which only works in a
process's main thread. We keep those guards (a pathological expression must not hang a collection
run), so grading runs only in a main thread: the caller's when it is the main thread, else (and
for large batches, to use every core) in worker processes, each grading in its own main thread.
Workers are spawned, not forked (the caller may hold threads that a fork would copy mid-lock), so
like any spawning code a script that grades many pairs needs ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import threading
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from lookahead_router.collection.agreement import Agreement
from lookahead_router.collection.tasks import Score, Scorer, Task
from lookahead_router.data.release import TEST_BENCHMARKS

TIMEOUT_S = 5          # per parse / verify call, math-verify's own alarm
POOL_THRESHOLD = 64    # fewer pairs than this are graded in-process (when on the main thread)

_BOX = re.compile(r"\\(?:boxed|fbox)\s*")
_FALLBACKS = [re.compile(p, re.IGNORECASE) for p in (
    r"final answer is[:\s]*(.+)", r"the answer is[:\s]*(.+)", r"answer:\s*(.+)")]


def _boxed_contents(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}`` / ``\\fbox{...}`` in order, nested braces kept whole
    (an unclosed box runs to the end of the text); ``\\boxed 5`` takes the next token."""
    found = []
    for m in _BOX.finditer(text):
        i = m.end()
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            while j < len(text):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    break
                j += 1
            found.append(text[i + 1:j])
        elif m.group().endswith(" "):
            token = re.match(r"[^\s$]+", text[i:])
            if token:
                found.append(token.group())
    return found


def extract_answer(text: str) -> str | None:
    """The response's final answer: the last boxed expression, else what follows the last
    "final answer is" / "the answer is" / "answer:" (its math part when it has one)."""
    boxed = [b.strip() for b in _boxed_contents(text or "") if b.strip()]
    if boxed:
        return _math_part(boxed[-1])
    for pattern in _FALLBACKS:
        matches = pattern.findall(text or "")
        if matches:
            return _math_part(matches[-1]) or None
    return None


_MATH_SPAN = re.compile(r"(?<!\\)\$([^$]+)(?<!\\)\$|\\\((.+?)\\\)")
_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")     # an English word, not a \command
_VERB = re.compile(r"\s(?:is|was|are|were)\s")


def _is_sentence(text: str) -> bool:
    return bool(_WORD.search(re.sub(r"\\(?:text|mbox|mathrm|begin|end)\{[^{}]*\}", "", text)))


def _math_part(answer: str) -> str:
    """The answer inside a sentence: "The range of $g(x)$ is $[0,25]$." -> "[0,25]" (the math
    span the sentence opens with, else its last one), "The final answer is $220." -> "$220"
    (what follows the last "is"); math delimiters of a bare answer are dropped."""
    spans = list(_MATH_SPAN.finditer(answer))
    if spans and _is_sentence(_MATH_SPAN.sub(" ", answer)):
        span = spans[0] if spans[0].start() == 0 else spans[-1]
        answer = span.group(1) or span.group(2)
    else:
        answer = _MATH_SPAN.sub(lambda m: m.group(1) or m.group(2), answer)
    if _is_sentence(answer):
        answer = _VERB.split(answer)[-1]
    return answer.strip().rstrip(".").strip()


def _clean(answer: str) -> str:
    """Text-level fixes before math-verify parses an answer (the reference or ours)."""
    answer = answer.strip().rstrip(".")
    answer = re.sub(r"(?<=\d),\s*\\!\s*(?=\d{3})", "", answer)     # 5,\!525: thousands separator
    answer = re.sub(r"\\?%$", "", answer)                           # 25\% vs 25: MATH drops the sign
    # "28.00 dollars": bare words would parse as a product of symbols; math-verify drops \text units
    return re.sub(r"(\d)\s+([A-Za-z]{3,}(?:\s+[A-Za-z]+)*)$", r"\1\\text{ \2}", answer)


def _plain(answer: str) -> str:
    """Answer as a bare string, for text answers math-verify cannot compare ("4:30 p.m.",
    "\\text{C, F, H}", "\\text{east}"): no \\text wrappers, spacing, dollar or degree signs."""
    answer = re.sub(r"\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}", r"\1", answer)
    answer = re.sub(r"\\[dt]frac", r"\\frac", answer)
    answer = re.sub(r"\\left|\\right|\\[!,;: ]|\\?\$|\\?%|\^\{?\\circ\}?|\s", "", answer)
    return answer.rstrip(".").lower()


def _parse(expression: str):
    # Boxing the expression makes math-verify's LaTeX extractor take it whole (with its units and
    # \text normalisation); the plain-expression config catches what LaTeX parsing rejects.
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse
    return parse("\\boxed{" + _clean(expression) + "}",
                 [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()],
                 parsing_timeout=TIMEOUT_S)


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _candidates(answer: str) -> list[str]:
    """What math-verify is asked to compare: the answer, and for a sentence without a verb to split
    at ("John paid $360 for the shoes") its last number, which math-verify's parse of a whole
    sentence may miss."""
    numbers = _NUMBER.findall(answer) if _is_sentence(answer) else []
    return [answer] + numbers[-1:]


def _grade_one(response: str, reference: str) -> tuple[bool, str | None]:
    """(correct, extracted answer). Must run in a main thread (math-verify's alarms)."""
    from math_verify import verify
    extracted = extract_answer(response)
    if extracted is None:
        return False, None
    if _plain(extracted) == _plain(str(reference)):
        return True, extracted
    gold = _parse(str(reference))
    return bool(gold) and any(verify(gold, pred, timeout_seconds=TIMEOUT_S)
                              for pred in map(_parse, _candidates(extracted)) if pred), extracted


def _grade_chunk(pairs: Sequence[tuple[str, str]]) -> list[tuple[bool, str | None]]:
    return [_grade_one(r, ref) for r, ref in pairs]


def grade_many(pairs: Sequence[tuple[str, str]], progress: bool = False, workers: int | None = None,
               desc: str = "math") -> list[tuple[bool, str | None]]:
    """(correct, extracted answer) per (response, reference) pair; in worker processes when there
    are many pairs or when the caller is not the main thread (see the module docstring)."""
    on_main = threading.current_thread() is threading.main_thread()
    if on_main and (len(pairs) < POOL_THRESHOLD or workers == 1):
        return [_grade_one(r, ref) for r, ref in tqdm(pairs, desc=desc, disable=not progress)]
    workers = workers or min(os.cpu_count() or 1, max(1, len(pairs) // 16))
    chunk = max(1, min(64, len(pairs) // (4 * workers) or 1))
    chunks = [pairs[i:i + chunk] for i in range(0, len(pairs), chunk)]
    out: list[tuple[bool, str | None]] = []
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool, \
            tqdm(total=len(pairs), desc=desc, disable=not progress) as bar:
        for part in pool.map(_grade_chunk, chunks):
            out.extend(part)
            bar.update(len(part))
    return out


def grade(response: str, reference: str) -> bool:
    """Whether the response's final answer equals the reference (math-verify equivalence). Off the
    main thread each call starts a worker process (seconds): batch with ``grade_many`` there."""
    return grade_many([(response, reference)])[0][0]


class MathScorer(Scorer):
    """1.0 when the response's final answer matches ``task.reference``, else 0.0."""

    name = "math"

    def __init__(self, workers: int | None = None):
        self.workers = workers

    def applies(self, task: Task) -> bool:
        return task.reference is not None

    def score(self, pairs: Sequence[tuple[Task, str]], progress: bool = True) -> list[Score]:
        judged = grade_many([(response, task.reference) for task, response in pairs],
                            progress=progress, workers=self.workers)
        return [Score(1.0 if ok else 0.0, detail=f"answer {extracted!r} vs {task.reference!r}")
                for (ok, extracted), (task, _) in zip(judged, pairs)]


# --- verification against the release ------------------------------------------------------------

def _unsimplified(answer: str) -> bool:
    """A reducible fraction, a numeric power or a radical with a square factor."""
    fractions = re.findall(r"\\frac\{-?(\d+)\}\{(\d+)\}", answer)
    radicands = [int(n) for n in re.findall(r"\\sqrt\{(\d+)\}", answer)]
    return (any(math.gcd(int(a), int(b)) > 1 for a, b in fractions)
            or bool(re.fullmatch(r"\d+\^\{?\d+\}?", answer))
            or any(n % (k * k) == 0 for n in radicands for k in range(2, math.isqrt(n) + 1)))


# (kind, test(extracted, shipped prediction, reference)), first match wins; extracted is not None.
_KINDS = [
    ("equation: math-verify compares its right-hand side", lambda e, s, r: "=" in e and "=" not in r),
    ("answer stated in a sentence or with unit words", lambda e, s, r: _is_sentence(s) or _is_sentence(e)),
    ("shipped kept the math delimiters \\( \\) or $",
     lambda e, s, r: bool(re.search(r"\\\(|(?<!\\)\$", s)) and "$" not in e),
    ("shipped extracted a different answer", lambda e, s, r: _plain(e) != _plain(s)),
    ("text, units, ordinal or percent sign around the answer",
     lambda e, s, r: bool(re.search(r"\\text|\\mbox|\d(?:st|nd|rd|th)\b|%|\d\s+[a-zA-Z]{2,}\b", e + " " + r))),
    ("number-base subscript", lambda e, s, r: bool(re.search(r"_\{?\d+\}?$", e + " " + r))),
    ("list of answers in another order",
     lambda e, s, r: "," in e and sorted(_plain(e).split(",")) == sorted(_plain(r).split(","))),
    ("decimal vs fraction", lambda e, s, r: bool(re.search(r"\d\.\d|^-?\.\d", e + " " + r))),
    ("unsimplified value (fraction, power, radical)", lambda e, s, r: _unsimplified(e)),
    ("matrix entries written differently", lambda e, s, r: "matrix" in e),
]


def _kind(ours: bool, extracted: str | None, shipped_pred: str, reference: str) -> str:
    """A short category for one disagreement between our verdict and the release's."""
    if extracted is None:
        return "no final answer in the response (shipped took a fallback)"
    for kind, test in _KINDS:
        if test(extracted, shipped_pred, reference):
            return kind
    return ("equivalent form accepted by math-verify (reordered terms, other notation)" if ours
            else "math-verify rejected an answer the shipped grader matched")


def _release_details(root: Path, benchmark: str, model: str) -> list[tuple[str, dict]]:
    with gzip.open(Path(root) / "test" / benchmark / f"{model}.json.gz", "rt", encoding="utf-8") as fh:
        details = json.load(fh)["details"]
    return list(details.items() if isinstance(details, dict) else enumerate(details))


def verify_math(root: Path, benchmark: str, candidates: Sequence[str], progress: bool = True,
                workers: int | None = None) -> list[Agreement]:
    """Re-grade the release's ``test/<benchmark>/<model>.json.gz`` responses (benchmark "GSM8k" or
    "MATH", the folder names) and compare with the shipped ``correct`` flags: one Agreement row per
    candidate, each disagreement with a kind and our vs the shipped extracted answer."""
    per_model = {model: _release_details(root, benchmark, model) for model in candidates}
    judged = iter(grade_many([(d["origin_prediction"], d["references"])
                              for items in per_model.values() for _, d in items],
                             progress=progress, workers=workers, desc=f"verify {benchmark}"))
    rows = []
    for model, items in per_model.items():
        pairs = []
        for key, d in items:
            ok, extracted = next(judged)
            shipped, pred, ref = bool(d["correct"]), str(d.get("predictions", "")), str(d["references"])
            kind = _kind(ok, extracted, pred, ref) if ok != shipped else ""
            pairs.append((str(key), shipped, ok, kind, f"ours {extracted!r} vs shipped {pred!r}, reference {ref!r}"))
        rows.append(Agreement.from_pairs(TEST_BENCHMARKS.get(benchmark, benchmark), model,
                                         "re-grade origin_prediction with math-verify", pairs))
    return rows
