"""The `lookahead` command line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from lookahead_router import config
from lookahead_router.cli.common import _fail, _known_errors, _split, app, data_app, out, print_report
from lookahead_router.data.splits import PROTOCOL_HELP


@data_app.command("import-paper")
def import_paper(
    src: Optional[Path] = typer.Option(None, help=f"Release folder (default: ${config.DATA_ENV} "
                                       "or ../shared/lookahead-data)."),
    out_file: Path = typer.Option(..., "--out", help="Parquet file to write."),
    candidates: Optional[List[str]] = typer.Option(None, help="Candidates, in column order "
                                                   "(default: all found, in the paper's order)."),
    sources: Optional[List[str]] = typer.Option(None, help="Benchmarks/datasets to import (default: all)."),
) -> None:
    """Import the paper's released data (seven test benchmarks + SelfOSS) into a routing dataset."""
    from lookahead_router.data.release import import_release
    start = time.perf_counter()
    try:
        ds = import_release(config.release_dir(src), _split(candidates) or None, _split(sources) or None)
        ds.save(out_file)
    except _known_errors() as exc:
        _fail(exc)
    table = Table(title=f"Imported {len(ds)} queries x {len(ds.candidates)} candidates -> {out_file}")
    for col in ("source", "queries", "complete", "missing responses", "unmatched"):
        table.add_column(col, justify="left" if col == "source" else "right")
    for source, rep in ds.metadata["import_report"].items():
        missing = ", ".join(f"{c} {n}" for c, n in rep["missing"].items() if n) or "0"
        unmatched = ", ".join(f"{c} {n}" for c, n in rep["unmatched"].items() if n) or "0"
        table.add_row(source, str(rep["queries"]), str(rep["complete_queries"]), missing, unmatched)
    out.print(table)
    out.print(f"done in {time.perf_counter() - start:.1f}s. Queries with a missing response are kept "
              "(score NaN); 'unmatched' counts responses whose query is not in the question list.")


@data_app.command("download")
def download(
    out_dir: Path = typer.Option(..., "--out", help="Folder to write the release into."),
    url: Optional[str] = typer.Option(None, help="Base URL of the release's compressed_data/ folder "
                                      "(default: the release's own)."),
    candidates: Optional[List[str]] = typer.Option(None, help="Candidates to fetch (default: the paper's five)."),
) -> None:
    """Fetch the paper's released data over HTTPS (needs internet access)."""
    from lookahead_router.data.download import DEFAULT_URL, download_release
    from lookahead_router.data.release import PAPER_CANDIDATES
    try:
        written = download_release(out_dir, url or DEFAULT_URL, _split(candidates) or PAPER_CANDIDATES)
    except _known_errors() as exc:
        _fail(exc)
    out.print(f"{len(written)} file(s) written under {out_dir} (complete files already there were kept).")


@data_app.command("info")
def info(data: Path = typer.Option(..., help="Routing dataset (Parquet)."),
         threshold: float = typer.Option(0.8, help="Label threshold on min-max normalised scores.")) -> None:
    """Per source: queries, responses per candidate, and the share of positive training labels."""
    import numpy as np

    from lookahead_router.data.dataset import RoutingDataset
    from lookahead_router.data.labels import binary_labels
    try:
        ds = RoutingDataset.load(data)
        labels = binary_labels(ds, threshold)
    except _known_errors() as exc:
        _fail(exc)
    table = Table(title=f"{data}: {len(ds)} queries; cells: responses (positive labels at {threshold})")
    table.add_column("source")
    table.add_column("split")
    table.add_column("queries", justify="right")
    for c in ds.candidates:
        table.add_column(c, justify="right")
    source = ds.queries["source"].to_numpy()
    for s in ds.sources:
        rows = source == s
        cells = [f"{int(ds.available[rows, j].sum())} ({np.nanmean(labels[rows, j]) * 100:.0f}%)"
                 for j in range(len(ds.candidates))]
        table.add_row(s, ",".join(sorted(set(ds.queries["split"][rows]))), str(int(rows.sum())), *cells)
    out.print(table)


@data_app.command("folds")
def folds(
    data: Path = typer.Option(..., help="Routing dataset (Parquet)."),
    protocol: str = typer.Option("cv5", help=PROTOCOL_HELP + " (as in `lookahead benchmark`); "
                                 "'cv' takes its folds from --k."),
    k: Optional[int] = typer.Option(None, help="Folds for --protocol cv (default 5; cvK says K itself)."),
    seed: int = typer.Option(0, help="Shuffle seed for cv."),
    add_train: bool = typer.Option(False, help="Add the training-only rows (SelfOSS) to every training fold."),
    out_file: Optional[Path] = typer.Option(None, "--out", help="Write the folds as JSON (query ids)."),
) -> None:
    """Show (and optionally save) the train/test folds of an evaluation protocol."""
    from lookahead_router.data.dataset import RoutingDataset
    from lookahead_router.data.splits import make_folds, parse_protocol
    try:
        chosen = parse_protocol(protocol, k)
        ds = RoutingDataset.load(data)
        fold_list = make_folds(ds, chosen, seed=seed, add_train=add_train)
    except _known_errors() as exc:
        _fail(exc)
    ids = ds.queries["id"].to_numpy()
    for f in fold_list:
        out.print(f"{f.name}: train {len(f.train)}, test {len(f.test)}")
    if out_file:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(json.dumps({f.name: {"train": ids[f.train].tolist(), "test": ids[f.test].tolist()}
                                        for f in fold_list}))
        out.print(f"wrote {out_file}")


@app.command("eval")
def evaluate_cmd(
    data: Path = typer.Option(..., help="Routing dataset (Parquet)."),
    routers: Optional[List[str]] = typer.Option(None, help="Reference rows: candidate names, "
                                                "'candidates', 'random', 'oracle' (default: all)."),
    decisions: Optional[List[Path]] = typer.Option(None, help="Decisions files (JSONL, from `lookahead "
                                                   "route`, `decide` or a benchmark's folds) to score beside the "
                                                   "reference rows; ids must be the dataset's (default: none)."),
    benchmarks: Optional[List[str]] = typer.Option(None, help="Benchmarks (default: the seven test ones)."),
    fmt: str = typer.Option("table", "--format", help="table, json or markdown."),
    alpaca_files: Optional[Path] = typer.Option(None, help="Folder with AlpacaEval's official "
                                                f"df_gamed.csv (default: ${config.ALPACA_EVAL_FILES_ENV})."),
    alpaca_hub: bool = typer.Option(False, help="Fetch AlpacaEval's official files from the hub."),
    compare_paper: bool = typer.Option(False, help="Also print the gaps to the paper's Table 1."),
    out_file: Optional[Path] = typer.Option(None, "--out", help="Also write the JSON report here."),
) -> None:
    """Score routers with each benchmark's native metric; print a report shaped like Table 1."""
    from lookahead_router.data.dataset import RoutingDataset
    from lookahead_router.evaluation.decisions import Decisions
    from lookahead_router.evaluation.paper_table import gap_markdown
    from lookahead_router.evaluation.report import CANDIDATES, ORACLE, RANDOM, evaluate
    if fmt not in ("table", "json", "markdown"):
        _fail(ValueError(f"--format must be table, json or markdown, not {fmt!r}"))
    try:
        ds = RoutingDataset.load(data)
        # ids the dataset lacks would be dropped from scoring without a word: an error instead
        loaded = [Decisions.load(p).check(ds, str(p)) for p in decisions or []]
        report = evaluate(ds, _split(routers) or [CANDIDATES, RANDOM, ORACLE], loaded,
                          _split(benchmarks) or None, config.alpaca_eval_files_dir(alpaca_files), alpaca_hub,
                          progress=True)
    except _known_errors() as exc:
        _fail(exc)
    if out_file:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(report.to_json())
    if fmt == "json":
        sys.stdout.write(report.to_json() + "\n")
    elif fmt == "markdown":
        sys.stdout.write(report.to_markdown() + "\n")
    else:
        print_report(report)
    if compare_paper:
        out.print("\nOurs minus the paper's Table 1 (μo / μn):")
        sys.stdout.write(gap_markdown(report) + "\n")


@app.command("decide")
def decide(
    data: Path = typer.Option(..., help="Routing dataset (Parquet)."),
    router: str = typer.Option(..., help="A candidate name, 'random' or 'oracle'."),
    out_file: Path = typer.Option(..., "--out", help="Decisions file to write (JSONL)."),
    seed: int = typer.Option(0, help="Seed for 'random'."),
) -> None:
    """Write a reference router's decisions for every query, in the format `eval` reads."""
    from lookahead_router.choices import check_choices
    from lookahead_router.data.dataset import RoutingDataset
    from lookahead_router.evaluation.decisions import fixed_decisions, oracle_decisions, random_decisions
    try:
        ds = RoutingDataset.load(data)
        check_choices("router", [router], [*ds.candidates, "random", "oracle"])
        if router == "oracle":
            decisions = oracle_decisions(ds)
        elif router == "random":
            decisions = random_decisions(ds, seed)
        else:
            decisions = fixed_decisions(ds, router)
        decisions.save(out_file)
    except _known_errors() as exc:
        _fail(exc)
    out.print(f"wrote {len(decisions.ids)} decisions to {out_file}")


# The other commands live beside this file; importing them registers them.
from lookahead_router.cli import collect as _collect_commands  # noqa: E402,F401  (collect ...)
from lookahead_router.cli import analyze as _analyze_commands  # noqa: E402,F401  (analyze, report)
from lookahead_router.cli import route as _route_commands  # noqa: E402,F401  (route, calibrate)
from lookahead_router.cli import serve as _serve_commands  # noqa: E402,F401  (serve, log export)
from lookahead_router.cli import train as _train_commands  # noqa: E402,F401  (train, benchmark)

if __name__ == "__main__":
    app()
