"""Evaluate routers on a RoutingDataset and build a report shaped like the paper's Table 1:
mu_o (native metric) and mu_n (normalised) per benchmark, and the average mu_n per row."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from lookahead_router.choices import check_choices, unknown_message
from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.data.release import TEST_BENCHMARKS
from lookahead_router.evaluation.decisions import Decisions, DecisionsError
from lookahead_router.metrics.native import benchmark_info, metric_for, normalised, oracle_choice

RANDOM, ORACLE, CANDIDATES = "random", "oracle", "candidates"
# Column headings of the narrow report (a 100-column terminal fits eight numeric columns)
SHORT_NAMES = {"AlpacaEval": "Alpaca", "ArenaHard": "Arena", "MT-Bench": "MT-B", "HumanEval": "HumanE"}


@dataclass
class Report:
    """Rows x benchmarks. Over several seeds (``aggregate``) every cell is the mean over seeds, with
    its sample standard deviation in ``mu_o_std`` / ``mu_n_std`` and the average's in
    ``avg_std``; rows that do not change with the seed (the reference rows) have none."""
    benchmarks: list[str]
    queries: dict[str, int]
    rows: dict[str, dict[str, dict[str, float]]]  # row -> benchmark -> {"mu_o", "mu_n"[, stds]}
    alpaca_method: str | None = None
    notes: list[str] = field(default_factory=list)
    avg_std: dict[str, float] = field(default_factory=dict)
    seeds: int = 1

    def avg_mu_n(self, row: str) -> float:
        vals = [self.rows[row][b]["mu_n"] for b in self.benchmarks]
        return float(np.mean(vals)) if vals else float("nan")

    def to_dict(self) -> dict:
        rows = {}
        for name, cells in self.rows.items():
            rows[name] = {**{b: dict(v) for b, v in cells.items()}, "avg_mu_n": self.avg_mu_n(name)}
            if name in self.avg_std:
                rows[name]["avg_mu_n_std"] = self.avg_std[name]
        return {"benchmarks": self.benchmarks, "queries": self.queries, "alpaca_lc_method": self.alpaca_method,
                "notes": self.notes, "seeds": self.seeds, "rows": rows}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=True)

    @classmethod
    def from_dict(cls, data: dict) -> "Report":
        """The inverse of ``to_dict`` (extra keys, e.g. a benchmark's "run", are ignored)."""
        rows, avg_std = {}, {}
        for name, cells in data["rows"].items():
            rows[name] = {b: {k: float(v) for k, v in cells[b].items()} for b in data["benchmarks"]}
            if "avg_mu_n_std" in cells:
                avg_std[name] = float(cells["avg_mu_n_std"])
        return cls(list(data["benchmarks"]), dict(data["queries"]), rows, data.get("alpaca_lc_method"),
                   list(data.get("notes", [])), avg_std, int(data.get("seeds", 1)))

    def _cells(self, row: str) -> list[str]:
        out = []
        for b in self.benchmarks:
            cell = self.rows[row][b]
            out += [_fmt(cell["mu_o"], benchmark_info(b).decimals), _fmt(cell["mu_n"], 1, cell.get("mu_n_std"))]
        return out + [_fmt(self.avg_mu_n(row), 1, self.avg_std.get(row))]

    def header(self) -> list[str]:
        cols = ["Method"]
        for b in self.benchmarks:
            cols += [f"{b} μo", f"{b} μn"]
        return cols + ["Avg μn"]

    def to_markdown(self) -> str:
        lines = ["| " + " | ".join(self.header()) + " |",
                 "|" + "---|" * len(self.header())]
        lines += ["| " + " | ".join([row] + self._cells(row)) + " |" for row in self.rows]
        return "\n".join(lines + [""] + [f"- {n}" for n in self.footer()])

    def to_rich(self):
        """The whole table: μo and μn side by side (wide; ``to_rich_narrow`` for a terminal)."""
        from rich.table import Table
        table = Table(title="Routing performance (μo: native metric, μn: % of Random→Oracle gap)",
                      caption="\n".join(self.footer()), caption_justify="left")
        table.add_column("Method", no_wrap=True, min_width=max(map(len, self.rows), default=6))
        for col in self.header()[1:]:
            table.add_column(col, justify="right")
        for row in self.rows:
            table.add_row(row, *self._cells(row))
        return table

    def to_rich_narrow(self) -> list:
        """Two tables, μn then μo, with short benchmark names: half the width of ``to_rich``."""
        from rich import box
        from rich.table import Table
        tables = []
        for title, key in (("μn: % of the Random→Oracle gap closed (higher is better)", "mu_n"),
                           ("μo: each benchmark's native metric", "mu_o")):
            table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
            table.add_column("Method", overflow="fold")
            for b in self.benchmarks:
                table.add_column(SHORT_NAMES.get(b, b), justify="right")
            if key == "mu_n":
                table.add_column("Avg", justify="right")
            for row in self.rows:
                cells = [self.rows[row][b] for b in self.benchmarks]
                if key == "mu_n":
                    values = [_fmt(c["mu_n"], 1, c.get("mu_n_std")) for c in cells]
                    values.append(_fmt(self.avg_mu_n(row), 1, self.avg_std.get(row)))
                else:
                    values = [_fmt(c["mu_o"], benchmark_info(b).decimals) for b, c in zip(self.benchmarks, cells)]
                table.add_row(row, *values)
            tables.append(table)
        return tables

    def footer(self) -> list[str]:
        notes = ["μo: " + ", ".join(f"{b} {benchmark_info(b).metric}"
                                   for b in self.benchmarks),
                 "queries: " + ", ".join(f"{b} {self.queries[b]}" for b in self.benchmarks)]
        if self.alpaca_method:
            notes.append(f"AlpacaEval LC method: {self.alpaca_method}")
        if self.seeds > 1:
            notes.append(f"mean ± sample standard deviation over {self.seeds} seeds (μo: the mean)")
        return notes + self.notes


def _fmt(x: float, decimals: int, std: float | None = None) -> str:
    if x is None or math.isnan(x):
        return "–"
    return f"{x:.{decimals}f}" + ("" if std is None else f" ± {std:.{decimals}f}")


def aggregate(reports: Sequence[Report]) -> Report:
    """One report over seeds: each cell the mean of the seeds' cells, with sample standard
    deviations for the rows that differ between seeds."""
    if len(reports) == 1:
        return reports[0]
    first = reports[0]
    rows: dict[str, dict] = {}
    avg_std: dict[str, float] = {}
    for name in first.rows:
        cells = {}
        for b in first.benchmarks:
            mu_o = np.array([r.rows[name][b]["mu_o"] for r in reports])
            mu_n = np.array([r.rows[name][b]["mu_n"] for r in reports])
            cells[b] = {"mu_o": float(mu_o.mean()), "mu_n": float(mu_n.mean())}
            if np.ptp(mu_n) > 0 or np.ptp(mu_o) > 0:
                cells[b].update(mu_o_std=float(mu_o.std(ddof=1)), mu_n_std=float(mu_n.std(ddof=1)))
        rows[name] = cells
        averages = np.array([r.avg_mu_n(name) for r in reports])
        if np.ptp(averages) > 0:
            avg_std[name] = float(averages.std(ddof=1))
    notes = list(dict.fromkeys(n for r in reports for n in r.notes))
    return Report(list(first.benchmarks), dict(first.queries), rows, first.alpaca_method, notes, avg_std,
                  len(reports))


def default_benchmarks(ds: RoutingDataset) -> list[str]:
    """The test benchmarks present in ``ds``, in Table 1 order."""
    return [b for b in TEST_BENCHMARKS.values() if b in ds.sources]


def expand_routers(names: Sequence[str], ds: RoutingDataset) -> list[str]:
    out = []
    for name in names:
        if name == CANDIDATES:
            out += ds.candidates
        elif name in (RANDOM, ORACLE) or name in ds.candidates:
            out.append(name)
        else:
            raise DecisionsError(unknown_message("reference router", [name],
                                                 [*ds.candidates, CANDIDATES, RANDOM, ORACLE]))
    return list(dict.fromkeys(out))


def evaluate(ds: RoutingDataset, routers: Sequence[str] = (CANDIDATES, RANDOM, ORACLE),
             decisions: Sequence[Decisions] = (), benchmarks: Sequence[str] | None = None,
             alpaca_files: str | Path | None = None, alpaca_hub: bool = False,
             progress: bool = False) -> Report:
    """Score reference routers and saved decisions with each benchmark's native metric.

    Random's mu_o is the mean of the candidates' mu_o and Oracle takes the best candidate per query
    (paper, Section 5.1). Queries where some candidate has no scored response are left out, and
    when decision files cover only part of a benchmark every row of that benchmark is scored on the
    covered queries; the report's notes say both.
    """
    benchmarks = list(benchmarks) if benchmarks else default_benchmarks(ds)
    check_choices("benchmark", benchmarks, ds.sources, DecisionsError, "benchmarks in the dataset")
    names = expand_routers(routers, ds) + [d.name for d in decisions]
    if len(set(names)) != len(names):
        raise DecisionsError(f"two rows share a name: {names}; rename a decisions file or pass --name")
    rows: dict[str, dict] = {name: {} for name in names}
    report = Report([], {}, rows)
    for bench in tqdm(benchmarks, desc="eval", unit="benchmark", disable=not progress):
        part = ds.where(source=bench)
        # Rows compare fairly only where every candidate answered (the paper's code skips the rest).
        complete = part.available.all(axis=1)
        if not complete.all():
            report.notes.append(f"{bench}: {int((~complete).sum())} of {len(part)} queries lack a scored "
                                "response from some candidate and are left out")
        choices = {d.name: d.choice_for(part) for d in decisions}
        covered = complete.copy()
        for c in choices.values():
            covered &= c >= 0
        if not covered.any():
            report.notes.append(f"{bench}: no decisions for any scorable query; left out")
            continue
        if covered.sum() < complete.sum():
            report.notes.append(f"{bench}: scored on the {int(covered.sum())} of {int(complete.sum())} "
                                "queries that every decisions file covers")
        part = part.subset(covered)
        metric = metric_for(bench, part, alpaca_files, alpaca_hub)
        report.alpaca_method = getattr(metric, "method", report.alpaca_method)
        mu = {c: metric(np.full(len(part), j)) for j, c in enumerate(part.candidates)}
        mu[RANDOM] = float(np.mean([mu[c] for c in part.candidates]))
        mu[ORACLE] = metric(oracle_choice(metric))
        for d in decisions:
            mu[d.name] = metric(choices[d.name][covered])
        for name in names:
            rows[name][bench] = {"mu_o": mu[name], "mu_n": normalised(mu[name], mu[RANDOM], mu[ORACLE])}
        report.benchmarks.append(bench)
        report.queries[bench] = len(part)
    return report
