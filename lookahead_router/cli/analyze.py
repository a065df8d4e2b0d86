"""`lookahead analyze KIND` and `lookahead report`: thin wrappers over lookahead_router.analysis."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from lookahead_router.cli.common import _fail, _known_errors, _numbers, _split, app, out
from lookahead_router.errors import LookaheadError


@app.command("analyze")
def analyze_cmd(
    kind: str = typer.Argument(..., help="shares, difficulty, cost, cases (from the saved decisions); pool, "
                               "efficiency, sweep (train again under the run's settings)."),
    bench: Path = typer.Option(..., help="A finished `lookahead benchmark --out` folder."),
    data: Path = typer.Option(Path("runs/paper.parquet"), help="The routing dataset the benchmark ran on."),
    out_dir: Path = typer.Option(Path("runs/analyses"), "--out", help="KIND's JSON, markdown and PNGs go to OUT/KIND/."),
    routers: Optional[List[str]] = typer.Option(None, help="Rows to include (shares, cost; default: all) or to "
                                                "retrain (pool; default: mlc-mlm and --router)."),
    a: Optional[str] = typer.Option(None, help="difficulty, cases: router A (default: the Lookahead router)."),
    b: Optional[str] = typer.Option(None, help="difficulty, cases: router B (default: the best baseline)."),
    config: Optional[Path] = typer.Option(None, help="cost: serving config with prices and params_b "
                                          "(e.g. examples/replay.yaml)."),
    curves: Optional[List[str]] = typer.Option(None, help="cost: routers whose cost-weight sweep to draw."),
    limit: int = typer.Option(6, help="cases: how many queries to show."),
    router: str = typer.Option("lookahead-mlm", help="efficiency, sweep: the Lookahead router (efficiency "
                               "pairs it with ROUTER-norm, its λ = 0 row)."),
    fractions: Optional[List[str]] = typer.Option(None, help="efficiency: shares of each training fold "
                                                  "(default 0.1,0.25,0.5; 1 is always added)."),
    grid: Optional[List[str]] = typer.Option(None, help="sweep: OPTION=V1,V2,... (repeatable; default "
                                             "rm_weight=0,0.1,0.2,0.5,1 m=4,8,16 alpha=0.2,0.4,0.6)."),
    sizes: Optional[List[str]] = typer.Option(None, help="pool: pool sizes (default 3,4,5)."),
    all_subsets: bool = typer.Option(False, help="pool: every subset of each size, not only the first k."),
    router_cost: Optional[Path] = typer.Option(None, help="pool: a bench/router_cost.py JSON for GFLOPs and latency."),
    seeds: Optional[List[str]] = typer.Option(None, help="Retraining kinds: seeds (default: the run's)."),
    folds: Optional[List[str]] = typer.Option(None, help="Retraining kinds: fold indices (default: all)."),
    work: Optional[Path] = typer.Option(None, help="Retraining kinds: folder for their runs' decisions "
                                        "(default runs/analyses-work/KIND; finished folds are reused)."),
) -> None:
    """Run one of the paper's analyses on a finished benchmark (JSON, markdown, PNG to OUT/KIND/)."""
    from lookahead_router.analysis.kinds import run_analysis
    try:
        parsed_grid = {}
        for item in _split_grid(grid):
            name, sep, values = item.partition("=")
            if not sep or not values:
                raise LookaheadError(f"--grid expects OPTION=V1,V2,..., got {item!r}")
            parsed_grid[name] = _numbers([values], f"--grid {name}", float)
        analysis, md = run_analysis(
            kind, bench, data, out_dir, routers=_split(routers), a=a, b=b, config=config, curves=_split(curves),
            limit=limit, router=router, fractions=_numbers(fractions, "--fractions", float) or (0.1, 0.25, 0.5),
            grid=parsed_grid or None, sizes=_numbers(sizes, "--sizes") or (3, 4, 5), all_subsets=all_subsets,
            router_cost=router_cost, seeds=_numbers(seeds, "--seeds") or None,
            folds=_numbers(folds, "--folds") or None, work=work, log=lambda m: out.print(m, highlight=False))
    except _known_errors() as exc:
        _fail(exc)
    out.print(md.read_text(), highlight=False, markup=False)
    out.print(f"wrote {md.parent}/{kind}.json, {kind}.md" + "".join(f", {f}" for f in analysis.figures))


def _split_grid(values: Optional[List[str]]) -> list[str]:
    """--grid takes OPTION=V1,V2: split on spaces only (the commas belong to the values)."""
    return [v for value in values or [] for v in value.split() if v]


@app.command("report")
def report_cmd(
    bench: Path = typer.Option(..., help="A finished `lookahead benchmark --out` folder."),
    analyses: Optional[Path] = typer.Option(None, help="The --out folder of `lookahead analyze`."),
    results: Optional[Path] = typer.Option(None, help="A folder with router_cost*.md / proxy_load*.md "
                                           "(e.g. bench/results)."),
    out_file: Path = typer.Option(Path("report.html"), "--out", help="The HTML file to write."),
) -> None:
    """One self-contained HTML page (no server, no network): Table 1, paired comparisons, analyses, speed."""
    from lookahead_router.analysis.html_report import write_report
    try:
        path = write_report(out_file, bench=bench, analyses=analyses, results=results)
    except _known_errors() as exc:
        _fail(exc)
    out.print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB); open it in a browser")
