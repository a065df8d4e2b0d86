"""`lookahead train --holdout F`: keep a share of every source's prompts out of training, then
report how the trained router does on them beside the reference rows.

A user training on their own data wants one number before deploying: does the router beat always
asking the best single model? The held-out rows answer it with each benchmark's native metric,
beside the candidates, `task-best` (the per-benchmark lookup, which is given the label), random and
the oracle, all on the same rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.errors import LookaheadError
from lookahead_router.evaluation.decisions import Decisions, task_best_decisions
from lookahead_router.evaluation.report import CANDIDATES, ORACLE, RANDOM, Report, default_benchmarks, evaluate

HOLDOUT_DIR = "holdout"   # inside the router's folder: decisions.jsonl, report.json, report.md


class HoldoutError(LookaheadError):
    """The held-out share cannot be carved from these rows."""


def split_holdout(ds: RoutingDataset, fraction: float, seed: int = 0) -> tuple[RoutingDataset, RoutingDataset]:
    """(training rows, held-out rows): ``fraction`` of each source, drawn with ``seed``."""
    if not 0.0 < fraction < 1.0:
        raise HoldoutError(f"--holdout must be a fraction between 0 and 1, not {fraction}")
    source = ds.queries["source"].to_numpy()
    sources, counts = np.unique(source, return_counts=True)
    too_small = [f"{s} ({n})" for s, n in zip(sources, counts) if n < 2]
    if too_small:
        raise HoldoutError(f"--holdout needs at least two rows per source to stratify; "
                           f"{', '.join(too_small)} has fewer")
    train_rows, test_rows = train_test_split(np.arange(len(ds)), test_size=fraction, random_state=seed,
                                             stratify=source)
    return ds.subset(np.sort(train_rows)), ds.subset(np.sort(test_rows))


def evaluate_holdout(router, train: RoutingDataset, test: RoutingDataset, out_dir: str | Path) -> Report:
    """Route the held-out prompts, score them beside the reference rows, and save decisions and
    report under ``out_dir/holdout``."""
    decisions = router.route(test.queries["prompt"].tolist())
    mine = Decisions(router.name, test.ids, [d.model for d in decisions],
                     [{c: round(float(p), 6) for c, p in d.probabilities.items()} for d in decisions])
    test = test.select_candidates(router.candidates)
    benchmarks = default_benchmarks(test) or test.sources   # a user's own sources: their mean score
    report = evaluate(test, [CANDIDATES, RANDOM, ORACLE], [task_best_decisions(train, test), mine], benchmarks)
    folder = Path(out_dir) / HOLDOUT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    mine.save(folder / "decisions.jsonl")
    (folder / "report.json").write_text(report.to_json())
    (folder / "report.md").write_text(report.to_markdown() + "\n")
    (folder / "ids.json").write_text(json.dumps({"router": router.name, "held_out": test.ids}))
    return report


def summary(report: Report, router: str) -> str:
    """One line: the router's average μn against the best single candidate and task-best."""
    references = [r for r in report.rows if r not in (router, RANDOM, ORACLE, "task-best")]
    best = max(references, key=report.avg_mu_n)
    return (f"{router} average μn {report.avg_mu_n(router):.1f} on held-out prompts; best single candidate "
            f"{best} {report.avg_mu_n(best):.1f}, task-best {report.avg_mu_n('task-best'):.1f}, "
            f"random 0.0, oracle 100.0 (μn: the share of the random-to-oracle gap closed, per benchmark)")
