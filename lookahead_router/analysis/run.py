"""A finished `lookahead benchmark` folder as data for the analyses, and what an analysis writes.

A benchmark folder holds ``report.json`` (the Table 1 report, the paired comparisons and the run's
metadata) and ``decisions/<router>/seed<S>/<fold>.jsonl``, every test query's out-of-fold choice
and per-candidate scores. ``BenchRun`` joins each router's folds per seed and lines the choices up
with the rows of the routing dataset, so that an analysis reads decisions instead of retraining.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.errors import LookaheadError
from lookahead_router.evaluation.decisions import Decisions, task_best_decisions

TASK_BEST, ORACLE = "task-best", "oracle"


class AnalysisError(LookaheadError):
    """A benchmark folder or an analysis request that cannot be used."""


@dataclass
class BenchRun:
    folder: Path
    ds: RoutingDataset        # the benchmark's test rows, over the run's candidates
    report: dict              # report.json
    decisions: dict[str, list[Decisions]]  # router -> one per seed, folds joined

    @classmethod
    def load(cls, folder: str | Path, data: str | Path | RoutingDataset) -> "BenchRun":
        folder = Path(folder)
        path = folder / "report.json"
        if not path.is_file():
            raise AnalysisError(f"{folder}: no report.json (is it a finished `lookahead benchmark --out` folder?)")
        report = json.loads(path.read_text())
        ds = data if isinstance(data, RoutingDataset) else RoutingDataset.load(data)
        candidates = report["run"].get("candidates", ds.candidates)
        unknown = [c for c in candidates if c not in ds.candidates]
        if unknown:
            raise AnalysisError(f"{folder} was run over candidates {unknown} that {data} lacks")
        full = ds.select_candidates(candidates)
        per_source = _preset_per_source(report["run"]["preset"])
        if per_source:
            from lookahead_router.evaluation.benchmark import subsample
            full = subsample(full, per_source, 0)
        decisions = {}
        for router in report["rows"]:
            router_dir = folder / "decisions" / router
            per_seed = []
            for seed in report["run"]["seeds"]:
                files = [router_dir / f"seed{seed}" / f"{fold}.jsonl" for fold in report["run"]["folds"]]
                parts = [Decisions.load(f) for f in files if f.is_file()]
                if parts:
                    per_seed.append(Decisions.concat(router, parts))
            if len(per_seed) == len(report["run"]["seeds"]) and router_dir.is_dir():  # else reference or unfinished
                decisions[router_dir.name] = per_seed
        if not decisions:
            raise AnalysisError(f"{folder}/decisions holds no finished router")
        decisions[TASK_BEST] = _task_best(full, report["run"])
        # Rows every router decided where every candidate answered: the rows the report scores.
        ds = full.where(source=report["benchmarks"])
        covered = np.all([d.choice_for(ds) >= 0 for per_seed in decisions.values() for d in per_seed], axis=0)
        return cls(folder, ds.subset(covered & ds.available.all(axis=1)), report, decisions)

    @property
    def routers(self) -> list[str]:
        """The trained routers and task-best, in the report's order."""
        order = list(self.report["rows"])
        return sorted(self.decisions, key=lambda r: order.index(r) if r in order else len(order))

    @property
    def seeds(self) -> list[int]:
        return list(self.report["run"]["seeds"])

    @cached_property
    def choices(self) -> dict[str, list[np.ndarray]]:
        """Router -> per seed, the chosen candidate's index for each row of ``ds`` (-1: none)."""
        return {r: [d.choice_for(self.ds) for d in ds] for r, ds in self.decisions.items()}

    def scores(self, router: str, seed_index: int = 0) -> np.ndarray:
        """[n, T] the router's per-candidate scores on ``ds`` (NaN where it saved none)."""
        by_id = dict(zip(self.decisions[router][seed_index].ids, self.decisions[router][seed_index].scores))
        return np.array([[np.nan if not by_id.get(q) else by_id[q].get(c, np.nan) for c in self.ds.candidates]
                         for q in self.ds.ids], dtype=float)

    def avg_mu_n(self, row: str) -> float:
        return float(self.report["rows"][row]["avg_mu_n"])

    def require(self, *routers: str) -> None:
        missing = [r for r in routers if r not in self.decisions]
        if missing:
            raise AnalysisError(f"{self.folder} has no finished decisions for {missing}; it has "
                                f"{', '.join(self.routers)}")


def _preset_per_source(name: str) -> int | None:
    from lookahead_router.evaluation.presets import load_preset
    try:
        return load_preset(name).per_source
    except ValueError:
        return None


def _task_best(full: RoutingDataset, run: dict) -> list[Decisions]:
    """task-best's decisions per seed, rebuilt from the run's folds with the benchmark's rule."""
    from lookahead_router.data.splits import make_folds, parse_protocol
    protocol = parse_protocol(run["protocol"])
    out = []
    for seed in run["seeds"]:
        parts = [task_best_decisions(full.subset(f.train), full.subset(f.test))
                 for f in make_folds(full, protocol, seed=seed, add_train=run["add_train"]) if f.name in run["folds"]]
        out.append(Decisions.concat(TASK_BEST, parts))
    return out


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list]
    note: str = ""

    def to_markdown(self) -> str:
        def cell(v) -> str:
            if isinstance(v, float):
                return "–" if np.isnan(v) else f"{v:.1f}"
            return str(v)
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.rows]
        return "\n".join(lines + ([""] + [self.note] if self.note else []))


@dataclass
class Analysis:
    """What one `lookahead analyze KIND` writes to its folder: KIND.json, KIND.md and the figures."""
    kind: str
    title: str
    summary: dict
    tables: list[Table] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    environment: dict = field(default_factory=dict)   # the run's device and precision (and a retrain's)

    def write(self, out_dir: str | Path) -> Path:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        payload = {"kind": self.kind, "title": self.title, "summary": self.summary, "notes": self.notes,
                   "figures": self.figures, "tables": [asdict(t) for t in self.tables],
                   "environment": self.environment}
        (out_dir / f"{self.kind}.json").write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")
        (out_dir / f"{self.kind}.md").write_text(self.to_markdown())
        return out_dir / f"{self.kind}.md"

    def to_markdown(self) -> str:
        parts = [f"## {self.title}", "", *[f"- {n}" for n in self.notes], ""]
        parts += [t.to_markdown() + "\n" for t in self.tables]
        parts += [f"![{f}]({f})" for f in self.figures]
        return "\n".join(parts) + "\n"


def pyplot():
    """matplotlib's pyplot on the Agg backend: no display on servers, the files are all we need."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
