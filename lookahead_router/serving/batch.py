"""Offline routing of a file of prompts (`lookahead route`), resumable after a crash.

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

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from lookahead_router.routers.cost import Price, expected_costs
from lookahead_router.serving.protocol import prompt_of


class BatchError(ValueError):
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
    records: list[PromptRecord] = []
    for qid, where, row in prompt_rows(path, BatchError):
        if "prompt" in row:
            if not isinstance(row["prompt"], str):
                raise BatchError(f"{where}: 'prompt' must be a string")
            prompt = row["prompt"]
        elif "messages" in row:
            try:
                prompt = prompt_of(row["messages"])
            except ValueError as exc:
                raise BatchError(f"{where}: {exc}") from exc
        else:
            raise BatchError(f"{where}: no 'prompt' or 'messages' field")
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as exc:  # e.g. "\ud83d": a string cut inside an emoji
            raise BatchError(f"{where}: the prompt is not valid Unicode ({exc.reason} at "
                             f"character {exc.start})") from exc
        records.append(PromptRecord(qid, prompt, where))
    if not records:
        raise BatchError(f"{path}: no prompts")
    return records


# ---- resumable output -----------------------------------------------------------------------
def existing_decisions(output: str | Path, input_ids: set[str],
                       candidates: Sequence[str] | None = None) -> tuple[list[str], int]:
    """Ids already decided in ``output`` and the byte length of its complete lines.

    Only reads: the caller truncates (after every other check passed) so that an error leaves
    the file untouched. A last line without its newline is a write cut short by a crash; it is not
    counted and will be routed again."""
    output = Path(output)
    if not output.exists():
        return [], 0
    data = output.read_bytes()
    keep = data.rfind(b"\n") + 1  # 0 when no line is complete
    done: list[str] = []
    seen: set[str] = set()
    for lineno, raw in enumerate(data[:keep].split(b"\n")[:-1], 1):
        if not raw.strip():
            continue
        where = f"{output}:{lineno}"
        try:
            row = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BatchError(f"{where}: existing output line is not valid JSON ({exc}); "
                             "remove the file or pick another --output") from exc
        if not isinstance(row, dict) or "id" not in row or "model" not in row:
            raise BatchError(f"{where}: existing output line lacks 'id' or 'model'; "
                             "is this a decisions file?")
        qid = str(row["id"])
        if qid not in input_ids:
            raise BatchError(f"{where}: id {qid!r} is not in the input: the output holds decisions "
                             "for other prompts; remove it or pick another --output")
        if qid in seen:
            raise BatchError(f"{where}: duplicate id {qid!r} in the existing output")
        if candidates is not None and isinstance(row.get("scores"), dict) \
                and sorted(row["scores"]) != sorted(candidates):
            raise BatchError(f"{where}: scored candidates {sorted(row['scores'])} differ from the "
                             f"router's {sorted(candidates)}: written by another router?")
        seen.add(qid)
        done.append(qid)
    return done, keep


def decision_line(qid: str, model: str, scores: Mapping[str, float]) -> str:
    return json.dumps({"id": qid, "model": model, "scores": {c: float(s) for c, s in scores.items()}},
                      ensure_ascii=False) + "\n"


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
    output = Path(output)
    done, keep = existing_decisions(output, {r.id for r in records}, router.candidates)
    done_set = set(done)
    todo = [r for r in records if r.id not in done_set]
    summary = RouteSummary(len(records), len(done), 0)
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "ab") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size > keep:  # the torn line of an interrupted write
            fh.truncate(keep)
            summary.truncated_bytes = size - keep
            os.fsync(fh.fileno())
        bar = tqdm(total=len(records), initial=len(done), desc="route", unit="prompt",
                   disable=not progress)
        try:
            for start in range(0, len(todo), batch_size):
                batch = todo[start:start + batch_size]
                prompts = [r.prompt for r in batch]
                costs = expected_costs(prices, router.candidates, prompts) if cost_weight > 0 else None
                decisions = router.route(prompts, cost_weight=cost_weight, costs=costs)
                text = "".join(decision_line(r.id, d.model, d.probabilities)
                               for r, d in zip(batch, decisions))
                # One write per batch, then flush and fsync: after a crash every line on disk
                # is whole except possibly the last, which the next run drops.
                fh.write(text.encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
                for d in decisions:
                    summary.models[d.model] = summary.models.get(d.model, 0) + 1
                summary.written += len(batch)
                bar.update(len(batch))
                if on_batch is not None:
                    on_batch(summary.written)
        finally:
            bar.close()
    return summary
