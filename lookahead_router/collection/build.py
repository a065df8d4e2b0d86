"""`lookahead collect build`: responses + scores -> a routing dataset (paper, Appendix C.1).

For each prompt and candidate the score is taken from the first scorer (in priority order) that
scored the pair. Then, as the paper builds its training data:

1. queries on which every candidate scores the same are dropped from training (they teach the
   router nothing); test rows keep every query, as benchmarks do;
2. scores are min–max normalised within each source and binarised at the threshold (0.8) — the
   dataset stores the raw scores and ``data/labels.py`` derives the labels when a router trains, so
   the threshold is recorded in the dataset's metadata (``label_threshold``), which `lookahead
   train` uses unless ``--set threshold=`` says otherwise; the build report shows the labels it gives.

Prompts without a split are assigned one: a seeded ``test_fraction`` per source becomes "test"
(for `lookahead benchmark --protocol split`), the rest "train".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from lookahead_router.collection.store import JsonlStore, responses_file, scores_file
from lookahead_router.collection.tasks import Task
from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.data.labels import DEFAULT_THRESHOLD, binary_labels
from lookahead_router.errors import LookaheadError

SCORER_PRIORITY = ("code", "math", "judge", "reward")  # verifiable outcomes before model opinions


class BuildError(LookaheadError):
    """The collection folder cannot make a dataset; the message says what is missing."""


@dataclass
class BuildReport:
    prompts: int = 0
    kept: int = 0
    dropped_ties: int = 0
    unscored_pairs: dict[str, int] = field(default_factory=dict)   # per model: no response or score
    scorers_used: dict[str, int] = field(default_factory=dict)     # scorer -> pairs
    per_source: dict[str, dict] = field(default_factory=dict)      # Table-3-style statistics


def discover_models(root: Path) -> list[str]:
    """Candidates with a responses file, by the model name their records carry (sorted)."""
    names = set()
    for path in sorted((Path(root) / "responses").glob("*.jsonl")):
        for record in JsonlStore(path).load(repair=False).values():
            names.add(str(record.get("model", path.stem)))
            break
    return sorted(names)


def discover_scorers(root: Path) -> list[str]:
    present = {p.name for p in (Path(root) / "scores").glob("*") if p.is_dir()}
    return [s for s in SCORER_PRIORITY if s in present] + sorted(present - set(SCORER_PRIORITY))


def _assign_splits(tasks: Sequence[Task], test_fraction: float, seed: int) -> list[str]:
    splits = [t.split for t in tasks]
    rng = np.random.default_rng(seed)
    by_source: dict[str, list[int]] = {}
    for i, t in enumerate(tasks):
        if t.split is None:
            by_source.setdefault(t.source, []).append(i)
    for rows in by_source.values():
        n_test = int(round(test_fraction * len(rows)))
        test = set(rng.permutation(rows)[:n_test].tolist())
        for i in rows:
            splits[i] = "test" if i in test else "train"
    return splits


def _payload(task: Task) -> dict:
    out = {}
    for key in ("reference", "tests", "entry_point"):
        if getattr(task, key) is not None:
            out[key] = getattr(task, key)
    return out


def build_dataset(tasks: Sequence[Task], root: str | Path, models: Sequence[str] | None = None,
                  scorers: Sequence[str] | None = None, threshold: float = DEFAULT_THRESHOLD,
                  test_fraction: float = 0.2, keep_ties: bool = False, seed: int = 0
                  ) -> tuple[RoutingDataset, BuildReport]:
    root = Path(root)
    models = list(models) if models else discover_models(root)
    if not models:
        raise BuildError(f"{root}/responses: no responses; run `lookahead collect generate` first")
    scorers = list(scorers) if scorers else discover_scorers(root)
    if not scorers:
        raise BuildError(f"{root}/scores: no scores; run `lookahead collect score` first")
    if not 0.0 <= test_fraction < 1.0:
        raise BuildError(f"test fraction must lie in [0, 1), got {test_fraction}")
    n, t = len(tasks), len(models)
    responses = np.full((n, t), None, dtype=object)
    scores = np.full((n, t), np.nan)
    row_of = {task.id: i for i, task in enumerate(tasks)}
    report = BuildReport(prompts=n)
    for j, model in enumerate(models):
        for record in JsonlStore(responses_file(root, model)).load(repair=False).values():
            if record["id"] in row_of:
                responses[row_of[record["id"]], j] = record.get("response")
        for scorer in scorers:
            for record in JsonlStore(scores_file(root, scorer, model)).load(repair=False).values():
                i = row_of.get(str(record["id"]))
                if i is None or record.get("score") is None or not np.isnan(scores[i, j]) \
                        or responses[i, j] is None:
                    continue
                scores[i, j] = float(record["score"])
                report.scorers_used[scorer] = report.scorers_used.get(scorer, 0) + 1
        report.unscored_pairs[model] = int(np.isnan(scores[:, j]).sum())

    splits = _assign_splits(tasks, test_fraction, seed)
    queries = pd.DataFrame({
        "id": [task.id for task in tasks], "source": [task.source for task in tasks],
        "split": splits, "prompt": [task.prompt for task in tasks],
        "turns": [[str(m.get("content") or "") for m in task.messages if m.get("role") == "user"]
                  for task in tasks],
        "payload": [_payload(task) for task in tasks],
    })
    ds = RoutingDataset(models, queries, responses, scores)
    scored = ~np.isnan(scores)
    keep = scored.any(axis=1)  # a prompt nobody answered or scored says nothing
    if not keep_ties:  # (a prompt with one scored candidate is a tie too: nothing to compare)
        hi = np.where(scored, scores, -np.inf).max(axis=1)
        lo = np.where(scored, scores, np.inf).min(axis=1)
        tie = keep & (hi == lo) & (queries["split"].to_numpy() != "test")
        report.dropped_ties = int(tie.sum())
        keep &= ~tie
    ds = ds.subset(np.flatnonzero(keep))
    if not len(ds):
        raise BuildError("no prompt is left: every scored prompt has the same score for all "
                         "candidates (use --keep-ties to keep them)")
    report.kept = len(ds)
    ds.metadata = {"label_threshold": threshold, "collection": str(root), "scorers": scorers}
    report.per_source = _statistics(ds, threshold)
    return ds, report


def _statistics(ds: RoutingDataset, threshold: float) -> dict[str, dict]:
    """Per source: rows per split, each candidate's share of best responses (Table 3) and of
    positive labels at the threshold."""
    labels = binary_labels(ds, threshold)
    out = {}
    source = ds.queries["source"].to_numpy()
    for s in ds.sources:
        rows = source == s
        block = np.where(np.isnan(ds.scores[rows]), -np.inf, ds.scores[rows])
        best = block == block.max(axis=1, keepdims=True)
        out[s] = {"splits": ds.queries.loc[rows, "split"].value_counts().to_dict(),
                  "best_share": {c: float(100 * best[:, j].mean()) for j, c in enumerate(ds.candidates)},
                  "positive_share": {c: float(100 * np.nanmean(labels[rows, j]))
                                     if not np.isnan(labels[rows, j]).all() else float("nan")
                                     for j, c in enumerate(ds.candidates)}}
    return out
