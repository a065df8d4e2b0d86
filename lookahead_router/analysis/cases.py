"""`lookahead analyze cases` (the paper's Table 9): queries where two routers disagree and exactly
one of them picked a correct candidate, with the prompt, both routers' per-candidate scores and the
candidates' recorded responses, cut to a readable length.

"Correct" is the benchmark's native per-query quality reaching the query's best among the
candidates, on a query where not every candidate reaches it (on the binary benchmarks: a correct
answer where some candidate fails). The first seed's decisions are used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lookahead_router.analysis.difficulty import default_pair, groups
from lookahead_router.analysis.run import Analysis, AnalysisError, BenchRun, Table

PROMPT_CHARS, RESPONSE_CHARS = 500, 300


def _cut(text: object, limit: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def analyze_cases(run: BenchRun, out_dir: Path, a: str | None = None, b: str | None = None,
                  limit: int = 6, seed_index: int = 0) -> Analysis:
    if (a is None) != (b is None):
        raise AnalysisError("give both --a and --b, or neither (the default pair)")
    a, b = (a, b) if a is not None else default_pair(run)
    run.require(a, b)
    _, quality, _ = groups(run)
    ca, cb = run.choices[a][seed_index], run.choices[b][seed_index]
    rows = np.arange(len(run.ds))
    best = np.nanmax(quality, axis=1)
    correct = quality >= best[:, None]
    some_fail = ~correct.all(axis=1)
    a_right = correct[rows, ca] & ~correct[rows, cb] & some_fail
    b_right = correct[rows, cb] & ~correct[rows, ca] & some_fail
    picked = _spread(run, np.flatnonzero(a_right), (limit + 1) // 2) + _spread(run, np.flatnonzero(b_right), limit // 2)
    scores = {r: run.scores(r, seed_index) for r in (a, b)}
    cases, tables = [], []
    for i in picked:
        q = run.ds.queries.iloc[i]
        case = {"id": q["id"], "benchmark": q["source"], "prompt": _cut(q["prompt"], PROMPT_CHARS),
                "right": a if a_right[i] else b, a: run.ds.candidates[ca[i]], b: run.ds.candidates[cb[i]],
                "candidates": {c: {"quality": float(quality[i, j]), f"score {a}": float(scores[a][i, j]),
                                   f"score {b}": float(scores[b][i, j]),
                                   "response": _cut(run.ds.responses[i, j], RESPONSE_CHARS)}
                               for j, c in enumerate(run.ds.candidates)}}
        cases.append(case)
        rows_md = [[c, f"{v['quality']:.2f}", f"{v[f'score {a}']:.3f}", f"{v[f'score {b}']:.3f}",
                    ("A " if c == case[a] else "") + ("B" if c == case[b] else ""), _md(v["response"])]
                   for c, v in case["candidates"].items()]
        tables.append(Table(f"{case['id']} ({case['benchmark']}): only {case['right']} is right",
                            ["candidate", "quality", f"score A ({a})", f"score B ({b})", "picked by", "response"],
                            rows_md, note=f"**Prompt:** {_md(case['prompt'])}"))
    notes = [f"A = {a}, B = {b}; seed {run.seeds[seed_index]}'s decisions",
             f"disagreements where exactly one is right: A right on {int(a_right.sum())}, B right on "
             f"{int(b_right.sum())} of {len(run.ds)} queries",
             f"prompts cut at {PROMPT_CHARS} characters, responses at {RESPONSE_CHARS}"]
    return Analysis("cases", "Case study: where two routers disagree (Table 9)",
                    {"a": a, "b": b, "a_right": int(a_right.sum()), "b_right": int(b_right.sum()), "cases": cases},
                    tables, [], notes)


def _spread(run: BenchRun, rows: np.ndarray, k: int) -> list[int]:
    """Up to ``k`` of ``rows``, taken in turn from each benchmark so that one does not fill the study."""
    source = run.ds.queries["source"].to_numpy()
    by_bench = [list(rows[source[rows] == s]) for s in run.report["benchmarks"]]
    out = []
    while len(out) < k and any(by_bench):
        for rows_b in by_bench:
            if rows_b and len(out) < k:
                out.append(int(rows_b.pop(0)))
    return out


def _md(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
