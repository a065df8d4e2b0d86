"""`lookahead collect score`: score every generated response with one scorer, resumably.

Scores go to ``DIR/scores/<scorer>/<model>.jsonl``, one line per response:
    {"id": "gsm8k-1", "model": "...", "scorer": "math", "score": 1.0, "detail": "...", ...}
``score`` is null when the response could not be scored (``detail`` says why); such pairs are
not retried on the next run (delete the line to retry), and the dataset builder leaves them out.
A transient failure (``Score.retry``: the judge endpoint still failing after its retries) is not
written: it is counted in ``failed`` and tried again on the next run.
Pairs are scored a chunk at a time and each chunk is synced to disk before the next starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from lookahead_router.collection.build import discover_models
from lookahead_router.collection.store import JsonlStore, responses_file, scores_file
from lookahead_router.collection.tasks import Scorer, Task
from lookahead_router.errors import LookaheadError

SCORERS = ("math", "code", "reward", "judge")


@dataclass
class ScoreSummary:
    scored: dict[str, int] = field(default_factory=dict)       # per model, this run
    unscorable: dict[str, int] = field(default_factory=dict)   # per model: score None
    failed: dict[str, str] = field(default_factory=dict)       # per model: first transient error
    n_failed: int = 0                                           # pairs left for the next run
    skipped: int = 0                                            # scored in an earlier run
    not_applicable: int = 0                                     # tasks this scorer does not grade
    mean: dict[str, float] = field(default_factory=dict)        # per model, over all its scores


def make_scorer(name: str, **options) -> Scorer:
    """A scorer by name; ``options`` go to its constructor (see each scorer's module)."""
    if name == "math":
        from lookahead_router.collection.math_scorer import MathScorer
        return MathScorer(**options)
    if name == "code":
        from lookahead_router.collection.code_scorer import CodeScorer
        return CodeScorer(**options)
    if name == "reward":
        from lookahead_router.collection.reward import RewardModelScorer
        return RewardModelScorer(**options)
    if name == "judge":
        from lookahead_router.collection.judge import JudgeScorer
        return JudgeScorer(**options)
    raise LookaheadError(f"unknown scorer {name!r}; choose from {', '.join(SCORERS)}")


def score_collection(tasks: Sequence[Task], root: str | Path, scorer: Scorer,
                     models: Sequence[str] | None = None, chunk: int = 256,
                     progress: bool = True) -> ScoreSummary:
    root = Path(root)
    models = list(models) if models else discover_models(root)
    if not models:
        raise LookaheadError(f"{root}/responses: no responses to score; run `lookahead collect generate`")
    by_id = {t.id: t for t in tasks}
    applies = {t.id for t in tasks if scorer.applies(t)}
    summary = ScoreSummary(not_applicable=len(tasks) - len(applies))
    for model in models:
        responses = JsonlStore(responses_file(root, model)).load(repair=False)
        store = JsonlStore(scores_file(root, scorer.name, model))
        done = store.load()
        todo = [(by_id[qid], r.get("response") or "") for qid, r in responses.items()
                if qid in applies and qid not in done]
        summary.skipped += sum(1 for qid in responses if qid in applies and qid in done)
        for start in range(0, len(todo), chunk):
            pairs = todo[start:start + chunk]
            results = scorer.score(pairs, progress=progress)
            kept = [(task, s) for (task, _), s in zip(pairs, results) if not s.retry]
            store.append([{"id": task.id, "model": model, "scorer": scorer.name, "score": s.value,
                           "detail": s.detail, **({"extra": s.extra} if s.extra else {})}
                          for task, s in kept])
            for s in results:
                if s.retry:
                    summary.failed.setdefault(model, s.detail)
            summary.n_failed += len(pairs) - len(kept)
            summary.scored[model] = summary.scored.get(model, 0) + len(kept)
            summary.unscorable[model] = summary.unscorable.get(model, 0) + \
                sum(s.value is None for _, s in kept)
        values = [r["score"] for r in store.load(repair=False).values() if r.get("score") is not None]
        if values:
            summary.mean[model] = sum(values) / len(values)
    return summary
