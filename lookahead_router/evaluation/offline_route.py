"""Offline routing of a file of prompts (`lookahead route --prompts FILE --out FILE`; the older
spellings --input and --output still work), resumable after a crash.

Input: JSON Lines, one prompt per line, either
    {"id": "q1", "prompt": "Solve 3x + 7 = 22"}
    {"id": "q2", "messages": [{"role": "user", "content": "..."}, ...]}   # OpenAI chat format
or a routing dataset (``.parquet``), whose ids and first user turns are routed, so that benchmark
prompts can be routed here and scored with `lookahead eval --decisions`.

Output: the decisions format (``evaluation/decisions.py``), one line per prompt, in input order:
    {"id": "q1", "model": "...", "scores": {"candidate": probability, ...}}
Lines are appended a batch at a time and synced to disk, so a crash loses at most the batch being
written; a re-run keeps the complete lines, drops a torn last line and routes only what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from lookahead_router.data.append_log import AppendLog
from lookahead_router.errors import LookaheadError
from lookahead_router.evaluation.decisions import decision_record
from lookahead_router.prompts import row_prompt
from lookahead_router.routers.cost import Price, expected_costs


class BatchError(LookaheadError):
    """A prompts file or an existing output file cannot be used; the message names file and line."""


@dataclass(frozen=True)
class PromptRecord:
    id: str
    prompt: str
    where: str  # "file:line" (or "file row i"), for error messages


# ---- prompts --------------------------------------------------------------------------------
def read_prompts(path: str | Path) -> list[PromptRecord]:
    """Every prompt of a JSONL file or a routing dataset (``.parquet``), all validated before any
    is returned: ids are unique strings (default: the 1-based line number)."""
    path = Path(path)
    if not path.is_file():
        raise BatchError(f"{path}: no such prompts file")
    if path.suffix == ".parquet":
        return read_dataset_prompts(path)
    return read_jsonl_prompts(path)


def read_dataset_prompts(path: str | Path) -> list[PromptRecord]:
    from lookahead_router.data.dataset import RoutingDataset
    ds = RoutingDataset.load(path)
    return [PromptRecord(str(qid), str(prompt), f"{path} row {i}")
            for i, (qid, prompt) in enumerate(zip(ds.ids, ds.queries["prompt"]))]


def read_jsonl_prompts(path: str | Path) -> list[PromptRecord]:
    from lookahead_router.data.jsonl import prompt_rows
    records = [PromptRecord(qid, row_prompt(row, where, BatchError), where)
               for qid, where, row in prompt_rows(path, BatchError)]
    if not records:
        raise BatchError(f"{path}: no prompts")
    return records


# ---- resumable output -----------------------------------------------------------------------
def existing_decisions(output: AppendLog, input_ids: set[str],
                       candidates: Sequence[str] | None = None) -> list[str]:
    """Ids already decided in ``output``, checked against this run: the lines must be decisions
    of these prompts, by a router with these candidates. Only reads (``AppendLog.rows`` skips a
    torn last line): the caller repairs the file after every check passed, so that an error
    leaves it untouched."""
    hint = "; remove the file or pick another --out"
    done: list[str] = []
    seen: set[str] = set()
    for where, row in output.rows(hint):
        if "id" not in row or "model" not in row:
            raise BatchError(f"{where}: existing output line lacks 'id' or 'model'; "
                             "is this a decisions file?")
        qid = str(row["id"])
        if qid not in input_ids:
            raise BatchError(f"{where}: id {qid!r} is not in the input (--prompts): the output holds decisions "
                             f"for other prompts{hint}")
        if qid in seen:
            raise BatchError(f"{where}: duplicate id {qid!r} in the existing output")
        if candidates is not None and isinstance(row.get("scores"), dict) \
                and sorted(row["scores"]) != sorted(candidates):
            raise BatchError(f"{where}: scored candidates {sorted(row['scores'])} differ from the "
                             f"router's {sorted(candidates)}: written by another router?")
        seen.add(qid)
        done.append(qid)
    return done


@dataclass
class RouteSummary:
    total: int
    skipped: int                 # already in the output
    written: int
    models: dict[str, int] = field(default_factory=dict)  # calls per candidate among those written
    truncated_bytes: int = 0     # a torn last line dropped


def route_file(router, records: Sequence[PromptRecord], output: str | Path, batch_size: int = 32,
               cost_weight: float = 0.0, prices: Mapping[str, Price] | None = None,
               progress: bool = True, on_batch: Callable[[int], None] | None = None) -> RouteSummary:
    """Route ``records`` with ``router`` into ``output`` (decisions JSONL), resuming a previous
    run: lines already there are kept and their ids skipped. ``prices`` is needed when
    ``cost_weight`` > 0; costs are then ``routers.cost.expected_costs`` per prompt."""
    from tqdm import tqdm
    if batch_size < 1:
        raise BatchError(f"batch size must be >= 1, not {batch_size}")
    if cost_weight < 0 or not np.isfinite(cost_weight):
        raise BatchError(f"cost weight must be a finite number >= 0, not {cost_weight}")
    if cost_weight > 0:
        if prices is None:
            raise BatchError("a cost weight > 0 needs the candidates' prices (--config models.yaml)")
        missing = [c for c in router.candidates if c not in prices]
        if missing:
            raise BatchError(f"no price for candidate(s) {missing} (add them under 'models' in the config)")
    log = AppendLog(output, BatchError)
    done = set(existing_decisions(log, {r.id for r in records}, router.candidates))
    todo = [r for r in records if r.id not in done]
    # the CLI reports the torn line it dropped (from the summary), so no warning here
    summary = RouteSummary(len(records), len(done), 0, truncated_bytes=log.repair(warn=False))
    bar = tqdm(total=len(records), initial=len(done), desc="route", unit="prompt", disable=not progress)
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            prompts = [r.prompt for r in batch]
            costs = expected_costs(prices, router.candidates, prompts) if cost_weight > 0 else None
            decisions = router.route(prompts, cost_weight=cost_weight, costs=costs)
            # one synced write per batch: a crash loses at most the batch being written
            log.append(decision_record(r.id, d.model, {c: float(p) for c, p in d.probabilities.items()})
                       for r, d in zip(batch, decisions))
            for d in decisions:
                summary.models[d.model] = summary.models.get(d.model, 0) + 1
            summary.written += len(batch)
            bar.update(len(batch))
            if on_batch is not None:
                on_batch(summary.written)
    finally:
        bar.close()
    return summary
