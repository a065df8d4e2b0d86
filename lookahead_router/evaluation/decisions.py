"""Routing decisions as data: per query the chosen model, optionally per-candidate scores.

File format (JSON Lines, one query per line):
    {"id": "GSM8K/12", "model": "internlm2_5-20b-chat", "scores": {"Yi-1.5-34B-Chat": 0.31, ...}}
Any router's output saved this way can be evaluated with `lookahead eval --decisions FILE`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.data.jsonl import parse_json_line
from lookahead_router.errors import LookaheadError


class DecisionsError(LookaheadError):
    """A decisions file is malformed or does not fit the dataset."""


def decision_record(qid: str, model: str, scores: Mapping[str, float] | None = None) -> dict:
    """One line of a decisions file (``scores`` left out when None): what ``Decisions.save`` and
    the offline `lookahead route` (``offline_route.py``) write."""
    row = {"id": qid, "model": model}
    if scores is not None:
        row["scores"] = dict(scores)
    return row


@dataclass
class Decisions:
    name: str
    ids: list[str]
    models: list[str]
    scores: list[dict[str, float] | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.models):
            raise DecisionsError(f"{self.name}: {len(self.ids)} ids but {len(self.models)} models")
        if not self.scores:
            self.scores = [None] * len(self.ids)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for qid, model, scores in zip(self.ids, self.models, self.scores):
                fh.write(json.dumps(decision_record(qid, model, scores), ensure_ascii=False) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path, name: str | None = None) -> "Decisions":
        path = Path(path)
        if not path.is_file():
            raise DecisionsError(f"{path}: no such decisions file")
        ids, models, scores, seen = [], [], [], set()
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                row = parse_json_line(line, f"{path}:{lineno}", DecisionsError)
                if not isinstance(row, dict) or "id" not in row or "model" not in row:
                    raise DecisionsError(f"{path}:{lineno}: each line needs fields 'id' and 'model'")
                if row["id"] in seen:
                    raise DecisionsError(f"{path}:{lineno}: duplicate id {row['id']!r}")
                seen.add(row["id"])
                ids.append(str(row["id"]))
                models.append(str(row["model"]))
                scores.append(row.get("scores"))
        if not ids:
            raise DecisionsError(f"{path}: no decisions")
        return cls(name or path.stem, ids, models, scores)

    @classmethod
    def concat(cls, name: str, parts: list["Decisions"]) -> "Decisions":
        """One decisions set from disjoint parts (e.g. the folds of a protocol)."""
        return cls(name, [i for p in parts for i in p.ids], [m for p in parts for m in p.models],
                   [s for p in parts for s in p.scores])

    def check(self, ds: RoutingDataset, label: str | None = None) -> "Decisions":
        """Every id must be a query of ``ds`` and every model one of its candidates. A file may
        cover only part of the dataset (a test fold, one benchmark): only ids the dataset lacks
        are errors, which scoring would otherwise drop without a word (e.g. ids in another case)."""
        label = label or self.name
        self._check_models(ds, label)
        known = set(ds.ids)
        unknown = [q for q in self.ids if q not in known]
        if unknown:
            folded: dict[str, str] = {}
            for q in ds.ids:
                folded.setdefault(q.casefold(), q)
            examples = ", ".join(repr(q) + (f" (did you mean {folded[q.casefold()]!r}?)"
                                            if q.casefold() in folded else "") for q in unknown[:3])
            raise DecisionsError(f"{label}: {len(unknown)} of {len(self.ids)} ids are not queries of the "
                                 f"dataset, e.g. {examples}")
        return self

    def _check_models(self, ds: RoutingDataset, label: str) -> None:
        from lookahead_router.choices import unknown_message
        unknown = sorted({m for m in self.models if m not in ds.candidates})
        if unknown:
            raise DecisionsError(f"{label}: " + unknown_message("candidate", unknown, ds.candidates))

    def choice_for(self, ds: RoutingDataset) -> np.ndarray:
        """Candidate index per row of ``ds`` (-1 where this file has no decision)."""
        col = {c: j for j, c in enumerate(ds.candidates)}
        self._check_models(ds, self.name)
        by_id = dict(zip(self.ids, self.models))
        return np.array([col[by_id[q]] if q in by_id else -1 for q in ds.ids], dtype=int)


def fixed_decisions(ds: RoutingDataset, model: str) -> Decisions:
    """Always route to ``model``."""
    if model not in ds.candidates:
        from lookahead_router.choices import unknown_message
        raise DecisionsError(unknown_message("candidate", [model], ds.candidates))
    return Decisions(model, ds.ids, [model] * len(ds))


def random_decisions(ds: RoutingDataset, seed: int = 0) -> Decisions:
    """One seeded draw of uniform routing among the candidates that answered each query.
    (Reports use Random's expected value, the mean of the candidates, as the paper does.)"""
    rng = np.random.default_rng(seed)
    models = []
    for row in ds.available:
        choices = np.flatnonzero(row) if row.any() else np.arange(len(ds.candidates))
        models.append(ds.candidates[int(rng.choice(choices))])
    return Decisions(f"random-seed{seed}", ds.ids, models)


def oracle_decisions(ds: RoutingDataset) -> Decisions:
    """The best-scoring candidate per query (ties as in the reports' Oracle row)."""
    from lookahead_router.metrics.native import metric_for, oracle_choice

    models = np.empty(len(ds), dtype=object)
    source = ds.queries["source"].to_numpy()
    for s in ds.sources:
        rows = np.flatnonzero(source == s)
        part = ds.subset(rows)
        models[rows] = [part.candidates[j] for j in oracle_choice(metric_for(s, part))]
    return Decisions("oracle", ds.ids, models.tolist())


def task_best_decisions(train: RoutingDataset, test: RoutingDataset, name: str = "task-best") -> Decisions:
    """Per benchmark, the candidate with the best mean normalised score on the training rows of
    that benchmark. It reads the benchmark label, which a router never sees: a reference for what
    a lookup table gets. A benchmark absent from training (leave-one-benchmark-out) gets the best
    candidate over all training rows."""
    from lookahead_router.data.labels import normalised_scores

    norm = normalised_scores(train.select_candidates(test.candidates))
    source = train.queries["source"].to_numpy()
    with np.errstate(all="ignore"):
        overall = int(np.nanargmax(np.nanmean(norm, axis=0)))
        best = {s: int(np.nanargmax(np.nanmean(norm[source == s], axis=0))) for s in train.sources}
    return Decisions(name, test.ids, [test.candidates[best.get(s, overall)] for s in test.queries["source"]])
