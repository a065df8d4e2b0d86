"""Import the paper's released routing data (the `compressed_data/` layout) into a RoutingDataset.

Each benchmark reader yields the benchmark's question list and, per candidate, a mapping from a
query key to that candidate's (response, score, per-candidate payload). `_align` then builds the
[n, T] arrays: a candidate that lacks a query keeps the query (response None, score NaN) and the
gap is counted in the import report; keys a candidate has but the question list lacks are counted
too. Nothing is dropped silently.
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from lookahead_router.choices import check_choices
from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.errors import LookaheadError
from lookahead_router.metrics.arena_hard import game_value

# The five candidates of the paper's Table 1, in its row order.
PAPER_CANDIDATES = ["Yi-1.5-34B-Chat", "internlm2_5-20b-chat", "Phi-3-medium-4k-instruct",
                    "Llama-3.1-8B-Instruct", "Qwen2.5-Coder-7B-Instruct"]
# Release folder under test/ -> source name used everywhere else (Table 1 column order).
TEST_BENCHMARKS = {"AlpacaEval": "AlpacaEval", "ArenaHard": "ArenaHard", "MT-Bench": "MT-Bench",
                   "GSM8k": "GSM8K", "MATH": "MATH", "HumanEval": "HumanEval", "MBPP": "MBPP"}
SELFOSS_FOLDER = "train/SelfOSSInstructSC2_filtered2"
SELFOSS = "SelfOSS"
ALL_SOURCES = list(TEST_BENCHMARKS.values()) + [SELFOSS]

_MT_ANSWER_START = "[The Start of Assistant's Answer]\n"
_MT_ANSWER_END = "\n[The End of Assistant's Answer]"


class ReleaseFormatError(LookaheadError):
    """A release file is missing or malformed. The message names file, benchmark and candidate."""

    def __init__(self, path: Path, benchmark: str, candidate: str | None, reason: str):
        who = f"{benchmark}" + (f", candidate {candidate}" if candidate else "")
        super().__init__(f"{path}: {reason} ({who})")
        self.path, self.benchmark, self.candidate = path, benchmark, candidate


@dataclass
class _Reader:
    root: Path
    benchmark: str
    candidate: str | None = None

    def fail(self, path: Path, reason: str) -> ReleaseFormatError:
        return ReleaseFormatError(path, self.benchmark, self.candidate, reason)

    def load(self, rel: str):
        """Parse a .json.gz or .jsonl.gz file with errors that say which file and why."""
        path = self.root / rel
        if not path.is_file():
            raise self.fail(path, "missing file")
        try:
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                text = fh.read()
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
            raise self.fail(path, f"truncated or corrupt gzip ({exc})") from exc
        try:
            if rel.endswith(".jsonl.gz"):
                out = []
                for lineno, line in enumerate(text.splitlines(), 1):
                    if line.strip():
                        try:
                            out.append(json.loads(line))
                        except json.JSONDecodeError as exc:
                            raise self.fail(path, f"malformed JSON on line {lineno} ({exc.msg})") from exc
                return out
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise self.fail(path, f"malformed JSON at line {exc.lineno} ({exc.msg})") from exc

    def field(self, record, key: str, rel: str, where: str):
        """record[key], or an error naming the file (``rel``) and the record (``where``)."""
        try:
            return record[key]
        except (KeyError, TypeError, IndexError):
            raise self.fail(self.root / rel, f"{where} lacks field {key!r}") from None

    def for_candidate(self, candidate: str) -> "_Reader":
        return _Reader(self.root, self.benchmark, candidate)


# Each reader returns (questions, per_candidate) where questions is a list of dicts with key,
# prompt, turns, payload and per_candidate maps candidate -> {key: (response, score, extra)}.
Questions = list[dict]
PerCandidate = dict[str, dict]


def _details(r: _Reader, rel: str) -> dict:
    data = r.load(rel)
    details = r.field(data, "details", rel, "file")
    if isinstance(details, list):
        details = {str(i): d for i, d in enumerate(details)}
    return details


def _read_alpacaeval(r: _Reader, cands: Sequence[str]) -> tuple[Questions, PerCandidate]:
    rows = r.load("instructions.jsonl.gz")
    questions = [{"key": i, "prompt": r.field(q, "instruction", "instructions.jsonl.gz", f"line {i + 1}"),
                  "payload": {"index": i, "dataset": q.get("dataset"), "reference": q.get("reference", "")}}
                 for i, q in enumerate(rows)]
    by_text = {q["prompt"]: q["key"] for q in questions}
    per = {}
    for c in cands:
        rc, rel = r.for_candidate(c), f"{c}/weighted_alpaca_eval_gpt4_turbo/annotations.json.gz"
        got = {}
        for i, a in enumerate(rc.load(rel)):
            where = f"annotation {i}"
            text = rc.field(a, "instruction", rel, where)
            pref = rc.field(a, "preference", rel, where)
            got[by_text.get(text, ("unknown", text))] = (
                rc.field(a, "output_2", rel, where), np.nan if pref is None else float(pref), None)
        per[c] = got
    return questions, per


def _arena_score(games: list) -> float:
    """Sum of the candidate's per-game values over its two games, in [-6, 6] (paper's code)."""
    return float(sum(game_value(v, g) for g, v in enumerate(games))) if games else np.nan


def _read_arenahard(r: _Reader, cands: Sequence[str]) -> tuple[Questions, PerCandidate]:
    rel_q = "question.jsonl.gz"
    questions = []
    for i, q in enumerate(r.load(rel_q)):
        turns = [t["content"] for t in r.field(q, "turns", rel_q, f"line {i + 1}")]
        questions.append({"key": r.field(q, "question_id", rel_q, f"line {i + 1}"), "prompt": turns[0],
                          "turns": turns, "payload": {"cluster": q.get("cluster"), "games": {}}})
    per = {}
    for c in cands:
        rc = r.for_candidate(c)
        answers = {}
        rel = f"model_answer/{c}.jsonl.gz"
        for i, a in enumerate(rc.load(rel)):
            choice = rc.field(a, "choices", rel, f"line {i + 1}")[0]
            answers[rc.field(a, "question_id", rel, f"line {i + 1}")] = choice["turns"][0]["content"]
        # An answer without a judgment keeps its text but has no score; the reverse has no text.
        got = {qid: (text, np.nan, None) for qid, text in answers.items()}
        rel = f"model_judgment/{c}.jsonl.gz"
        for i, j in enumerate(rc.load(rel)):
            qid = rc.field(j, "question_id", rel, f"line {i + 1}")
            games = [g.get("score") for g in rc.field(j, "games", rel, f"line {i + 1}")]
            got[qid] = (answers.get(qid), _arena_score(games), {"games": games})
        per[c] = got
    return questions, per


def _read_mtbench(r: _Reader, cands: Sequence[str]) -> tuple[Questions, PerCandidate]:
    rel_q = "question.jsonl.gz"
    questions = [{"key": r.field(q, "question_id", rel_q, f"line {i + 1}"), "prompt": q["turns"][0],
                  "turns": list(q["turns"]), "payload": {"category": q.get("category"), "turn_scores": {}}}
                 for i, q in enumerate(r.load(rel_q))]
    per = {}
    for c in cands:
        rc, rel = r.for_candidate(c), f"judgments/gpt-4-0125-preview_judge_{c}_single.jsonl.gz"
        turns: dict = {}
        answer: dict = {}
        for i, j in enumerate(rc.load(rel)):
            where = f"line {i + 1}"
            qid, turn = rc.field(j, "question_id", rel, where), rc.field(j, "turn", rel, where)
            score = rc.field(j, "score", rel, where)
            # A rating of -1 marks a judgment FastChat could not parse. It is kept as -1: the
            # paper's Table 1 averages it in (FastChat's own show_result would drop it).
            turns.setdefault(qid, {})[int(turn)] = np.nan if score is None else float(score)
            if int(turn) == 1:
                prompt = rc.field(j, "user_prompt", rel, where)
                start = prompt.find(_MT_ANSWER_START)
                end = prompt.rfind(_MT_ANSWER_END)
                answer[qid] = prompt[start + len(_MT_ANSWER_START):end] if 0 <= start < end else None
        got = {}
        for qid, ts in turns.items():
            t1, t2 = ts.get(1, np.nan), ts.get(2, np.nan)
            # Routing uses the first turn only (the paper, after ZOOTER); the metric uses both.
            got[qid] = (answer.get(qid), t1, {"turn_scores": [t1, t2]})
        per[c] = got
    return questions, per


def _prompt_of(rc: _Reader, record: dict, key: str, rel: str, where: str) -> str:
    return rc.field(rc.field(record, key, rel, where)[0], "prompt", rel, where)


def _read_math(r: _Reader, cands: Sequence[str]) -> tuple[Questions, PerCandidate]:
    questions: dict = {}
    per = {}
    for c in cands:
        rc, rel = r.for_candidate(c), f"{c}.json.gz"
        got = {}
        for k, d in _details(rc, rel).items():
            where = f"details[{k}]"
            prompt = _prompt_of(rc, d, "prompt", rel, where)
            questions.setdefault(int(k), {"key": int(k), "prompt": prompt,
                                          "payload": {"reference": d.get("references")}})
            if questions[int(k)]["prompt"] != prompt:
                raise rc.fail(r.root / rel, f"{where}: prompt differs from the other candidates' files")
            got[int(k)] = (rc.field(d, "origin_prediction", rel, where),
                           float(bool(rc.field(d, "correct", rel, where))), None)
        per[c] = got
    return [questions[k] for k in sorted(questions)], per


def _read_code(r: _Reader, cands: Sequence[str], passed_field: str, payload_field: str
               ) -> tuple[Questions, PerCandidate]:
    questions: dict = {}
    per = {}
    for c in cands:
        rc = r.for_candidate(c)
        pred_rel, res_rel = f"predictions/{c}.json.gz", f"results/{c}.json.gz"
        preds = rc.load(pred_rel)
        results = _details(rc, res_rel)
        got = {}
        for k, p in preds.items():
            where = f"entry {k}"
            prompt = _prompt_of(rc, p, "origin_prompt", pred_rel, where)
            questions.setdefault(int(k), {"key": int(k), "prompt": prompt,
                                          "payload": {payload_field: p.get("gold")}})
            if k not in results:
                continue  # counted as missing for this candidate by _align
            passed = rc.field(results[k], passed_field, res_rel, f"details[{k}]")
            got[int(k)] = (rc.field(p, "prediction", pred_rel, where), float(bool(passed)), None)
        per[c] = got
    return [questions[k] for k in sorted(questions)], per


def _read_selfoss(r: _Reader, cands: Sequence[str]) -> tuple[Questions, PerCandidate]:
    rel_q = "instructions.jsonl.gz"
    eval_ids = set(r.load("eval_ids.json.gz"))
    questions = [{"key": r.field(q, "prompt_id", rel_q, f"line {i + 1}"), "prompt": q.get("prompt", ""),
                  "payload": {"tags": q.get("tags", [])}} for i, q in enumerate(r.load(rel_q))]
    for q in questions:
        q["split"] = "validation" if q["key"] in eval_ids else "train"
    per = {}
    for c in cands:
        rc, rel = r.for_candidate(c), f"responses/{c}.jsonl.gz"
        per[c] = {rc.field(x, "prompt_id", rel, f"line {i + 1}"):
                  (x.get("response"), float(rc.field(x, "score", rel, f"line {i + 1}")), None)
                  for i, x in enumerate(rc.load(rel))}
    return questions, per


READERS: dict[str, Callable[[_Reader, Sequence[str]], tuple[Questions, PerCandidate]]] = {
    "AlpacaEval": _read_alpacaeval, "ArenaHard": _read_arenahard, "MT-Bench": _read_mtbench,
    "GSM8K": _read_math, "MATH": _read_math,
    "HumanEval": lambda r, c: _read_code(r, c, "passed", "task_id"),
    "MBPP": lambda r, c: _read_code(r, c, "is_correct", "tests"),
    SELFOSS: _read_selfoss,
}


def _align(source: str, questions: Questions, per: PerCandidate, cands: Sequence[str],
           split: str) -> tuple[RoutingDataset, dict]:
    n, t = len(questions), len(cands)
    responses = np.full((n, t), None, dtype=object)
    scores = np.full((n, t), np.nan)
    payloads = [dict(q.get("payload", {})) for q in questions]
    row_of = {q["key"]: i for i, q in enumerate(questions)}
    report = {"queries": n, "missing": {}, "unmatched": {}}
    for j, c in enumerate(cands):
        got = per[c]
        report["unmatched"][c] = sum(1 for k in got if k not in row_of)
        for k, (response, score, extra) in got.items():
            i = row_of.get(k)
            if i is None:
                continue
            responses[i, j], scores[i, j] = response, score
            for name, value in (extra or {}).items():
                payloads[i].setdefault(name, {})[c] = value
        report["missing"][c] = int(np.isnan(scores[:, j]).sum())
    report["complete_queries"] = int((~np.isnan(scores)).all(axis=1).sum())
    queries = pd.DataFrame({
        "id": [f"{source}/{q['key']}" for q in questions],
        "source": source,
        "split": [q.get("split", split) for q in questions],
        "prompt": [q["prompt"] for q in questions],
        "turns": [q.get("turns") or [q["prompt"]] for q in questions],
        "payload": payloads,
    })
    return RoutingDataset(list(cands), queries, responses, scores), report


def discover_candidates(root: Path) -> list[str]:
    """Every candidate with a file in any per-candidate folder, the paper's five first (in Table 1
    order), then alphabetically. A candidate missing from one benchmark then fails the import
    with an error that names it, instead of silently disappearing."""
    test = root / "test"
    found = {p.name for p in (test / "AlpacaEval").glob("*/") if p.is_dir()}
    for folder, suffix in (("GSM8k", ".json.gz"), ("MATH", ".json.gz"), ("HumanEval/results", ".json.gz"),
                           ("MBPP/results", ".json.gz"), ("ArenaHard/model_answer", ".jsonl.gz")):
        found |= {p.name[: -len(suffix)] for p in (test / folder).glob("*" + suffix)}
    return [c for c in PAPER_CANDIDATES if c in found] + sorted(found - set(PAPER_CANDIDATES))


def import_release(root: str | Path, candidates: Sequence[str] | None = None,
                   sources: Iterable[str] | None = None, progress: bool = True) -> RoutingDataset:
    """Read the release under ``root`` (holding test/ and train/) into one RoutingDataset."""
    root = Path(root)
    if not (root / "test").is_dir():
        raise ReleaseFormatError(root / "test", "release", None,
                                 "missing folder: expected the release layout with test/ and train/")
    folders = {v: k for k, v in TEST_BENCHMARKS.items()}
    if sources is None:
        unknown = sorted(p.name for p in (root / "test").iterdir()
                         if p.is_dir() and p.name not in TEST_BENCHMARKS)
        if unknown:
            raise ReleaseFormatError(root / "test" / unknown[0], unknown[0], None,
                                     f"unknown benchmark folder (known: {', '.join(TEST_BENCHMARKS)}); "
                                     "pass the sources to import explicitly to ignore it")
        sources = ALL_SOURCES
    sources = list(sources)
    check_choices("source", sources, ALL_SOURCES)
    cands = list(candidates) if candidates else discover_candidates(root)
    if not cands:
        raise ReleaseFormatError(root / "test", "release", None, "no candidate files found")
    parts, reports = [], {}
    for source in tqdm(sources, desc="import", unit="benchmark", disable=not progress):
        folder = SELFOSS_FOLDER if source == SELFOSS else f"test/{folders[source]}"
        questions, per = READERS[source](_Reader(root / folder, source), cands)
        part, reports[source] = _align(source, questions, per, cands,
                                       split="train" if source == SELFOSS else "test")
        parts.append(part)
    ds = RoutingDataset.concat(parts)
    ds.metadata = {"import_report": reports, "release": str(root)}
    return ds
