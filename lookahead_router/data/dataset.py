"""The routing dataset: queries, an ordered list of candidate models, and each candidate's response
and raw score per query, plus the per-benchmark payload the native metrics need.

In memory it is a small table of queries plus two [n, T] arrays (responses, scores); on disk it is
one Parquet file whose schema metadata records the candidate order.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lookahead_router.choices import check_choices
from lookahead_router.errors import LookaheadError

QUERY_COLUMNS = ["id", "source", "split", "prompt", "turns", "payload"]
_META_KEY = b"lookahead.candidates"
_FORMAT_KEY = b"lookahead.format"
_FORMAT = b"routing-dataset/1"


class DatasetError(LookaheadError):
    """A routing dataset is malformed or a request on it cannot be met."""


@dataclass(repr=False)
class RoutingDataset:
    """Queries x candidates.

    Attributes:
        candidates: candidate model names, in column order.
        queries: one row per query with columns ``id`` (unique str), ``source`` (benchmark or
            dataset name), ``split`` ("train", "validation" or "test"), ``prompt`` (first user
            turn), ``turns`` (all user turns), ``payload`` (dict: what the source's native metric
            needs; per-candidate entries are keyed by candidate name, so subsetting candidates
            never rewrites it).
        responses: object array [n, T]; None where a candidate has no response.
        scores: float array [n, T]; the raw per-query score of each response, NaN where missing.
    """

    candidates: list[str]
    queries: pd.DataFrame
    responses: np.ndarray
    scores: np.ndarray
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.candidates = [str(c) for c in self.candidates]
        if len(set(self.candidates)) != len(self.candidates):
            raise DatasetError(f"duplicate candidate names: {self.candidates}")
        missing = [c for c in QUERY_COLUMNS if c not in self.queries.columns]
        if missing:
            raise DatasetError(f"queries table lacks column(s) {missing}")
        self.queries = self.queries.reset_index(drop=True)
        n, t = len(self.queries), len(self.candidates)
        self.scores = np.asarray(self.scores, dtype=float).reshape(n, t)
        self.responses = np.asarray(self.responses, dtype=object).reshape(n, t)
        dup = self.queries["id"][self.queries["id"].duplicated()]
        if len(dup):
            raise DatasetError(f"duplicate query ids, e.g. {list(dup[:3])}")

    def __repr__(self) -> str:
        return (f"RoutingDataset({len(self)} queries x {len(self.candidates)} candidates "
                f"{self.candidates}, sources {self.sources})")

    # -- shape -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.queries)

    @property
    def ids(self) -> list[str]:
        return self.queries["id"].tolist()

    @property
    def sources(self) -> list[str]:
        """Sources in order of first appearance."""
        return list(dict.fromkeys(self.queries["source"]))

    @property
    def available(self) -> np.ndarray:
        """[n, T] bool: the candidate has a scored response for the query."""
        return ~np.isnan(self.scores)

    def payload(self, i: int) -> dict:
        return self.queries.at[i, "payload"]

    # -- selection -------------------------------------------------------------------------
    def select_candidates(self, names: Sequence[str]) -> "RoutingDataset":
        """A dataset over ``names`` (any subset, any order) of the candidates."""
        names = list(names)
        check_choices("candidate", names, self.candidates, DatasetError)
        if not names:
            raise DatasetError("select at least one candidate")
        cols = [self.candidates.index(c) for c in names]
        return RoutingDataset(names, self.queries.copy(), self.responses[:, cols],
                              self.scores[:, cols], dict(self.metadata))

    def subset(self, rows: Iterable[int] | np.ndarray) -> "RoutingDataset":
        """Rows by position (int indices or a boolean mask), in the order given."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        elif rows.size == 0:
            rows = rows.astype(int)  # np.asarray([]) is float: an empty selection is still valid
        return RoutingDataset(list(self.candidates), self.queries.iloc[rows].copy(),
                              self.responses[rows], self.scores[rows], dict(self.metadata))

    def where(self, *, source: str | Sequence[str] | None = None,
              split: str | Sequence[str] | None = None) -> "RoutingDataset":
        """Rows of these sources and splits. A value no row has is an error naming the ones the
        dataset has (a mistyped --sources would otherwise select nothing, or less than meant)."""
        mask = np.ones(len(self), dtype=bool)
        for column, value in (("source", source), ("split", split)):
            if value is not None:
                values = [value] if isinstance(value, str) else list(value)
                check_choices(column, values, list(dict.fromkeys(self.queries[column])), DatasetError)
                mask &= self.queries[column].isin(values).to_numpy()
        return self.subset(mask)

    @staticmethod
    def concat(parts: Sequence["RoutingDataset"]) -> "RoutingDataset":
        if not parts:
            raise DatasetError("nothing to concatenate")
        cands = parts[0].candidates
        for p in parts[1:]:
            if p.candidates != cands:
                raise DatasetError(f"candidate lists differ: {cands} vs {p.candidates}")
        return RoutingDataset(list(cands), pd.concat([p.queries for p in parts], ignore_index=True),
                              np.concatenate([p.responses for p in parts]),
                              np.concatenate([p.scores for p in parts]), dict(parts[0].metadata))

    # -- storage ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write one Parquet file atomically (a crash never leaves a half-written file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.table({
            "id": pa.array(self.queries["id"].astype(str).tolist(), pa.string()),
            "source": pa.array(self.queries["source"].astype(str).tolist(), pa.string()),
            "split": pa.array(self.queries["split"].astype(str).tolist(), pa.string()),
            "prompt": pa.array(self.queries["prompt"].astype(str).tolist(), pa.string()),
            "turns": pa.array([list(t) for t in self.queries["turns"]], pa.list_(pa.string())),
            "payload": pa.array([json.dumps(p, ensure_ascii=False) for p in self.queries["payload"]],
                                pa.string()),
            "responses": pa.array([[None if r is None else str(r) for r in row] for row in self.responses],
                                  pa.list_(pa.string())),
            "scores": pa.array([[None if np.isnan(s) else float(s) for s in row] for row in self.scores],
                               pa.list_(pa.float64())),
        })
        meta = {_META_KEY: json.dumps(self.candidates).encode(), _FORMAT_KEY: _FORMAT,
                b"lookahead.metadata": json.dumps(self.metadata).encode()}
        table = table.replace_schema_metadata(meta)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
        os.close(fd)
        try:
            pq.write_table(table, tmp, compression="zstd")
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; a dataset is meant to be shared
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "RoutingDataset":
        path = Path(path)
        if not path.exists():
            raise DatasetError(f"{path}: no such routing dataset (create one with "
                               "`lookahead data import-paper`)")
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DatasetError(f"{path}: not a readable Parquet file ({exc})") from exc
        meta = table.schema.metadata or {}
        if meta.get(_FORMAT_KEY) != _FORMAT or _META_KEY not in meta:
            raise DatasetError(f"{path}: not a lookahead routing dataset (schema metadata missing)")
        candidates = json.loads(meta[_META_KEY])
        cols = table.to_pydict()
        n, t = table.num_rows, len(candidates)
        for name in ("responses", "scores"):
            bad = [i for i, row in enumerate(cols[name]) if len(row) != t]
            if bad:
                raise DatasetError(f"{path}: row {bad[0]} has {len(cols[name][bad[0]])} {name}, "
                                   f"expected {t} (one per candidate)")
        queries = pd.DataFrame({
            "id": cols["id"], "source": cols["source"], "split": cols["split"],
            "prompt": cols["prompt"], "turns": cols["turns"],
            "payload": [json.loads(p) for p in cols["payload"]],
        })
        responses = np.empty((n, t), dtype=object)
        for i, row in enumerate(cols["responses"]):
            responses[i, :] = row
        scores = np.array([[np.nan if s is None else s for s in row] for row in cols["scores"]],
                          dtype=float).reshape(n, t)
        metadata = json.loads(meta.get(b"lookahead.metadata", b"{}"))
        return cls(candidates, queries, responses, scores, metadata)
