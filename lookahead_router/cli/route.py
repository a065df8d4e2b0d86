"""`lookahead route` (a file of prompts -> decisions) and `lookahead calibrate` (pick the cost weight)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from lookahead_router.cli.common import _fail, _known_errors, _split, app, err, out
from lookahead_router.errors import LookaheadError


@app.command("route")
def route_cmd(
    # --input / --output: the names before the flags were made the same in every command
    input_file: Path = typer.Option(..., "--prompts", "--input", help="Prompts: JSONL lines {\"id\", "
                                    "\"prompt\"} or {\"id\", \"messages\"} (routed on the last user "
                                    "message), or a routing dataset (.parquet)."),
    output: Path = typer.Option(..., "--out", "--output", help="Decisions file (JSONL) to write; if it exists, "
                                "the run resumes: its ids are skipped and the rest appended."),
    router: Optional[Path] = typer.Option(None, help="Trained router folder (default: the config's "
                                          "'router')."),
    batch_size: int = typer.Option(32, help="Prompts scored, written and synced to disk together."),
    cost_weight: Optional[float] = typer.Option(None, help="w in P(good) − w · relative cost "
                                                "(default: the config's cost_weight, else 0)."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="Serving config (models.yaml) "
                                               "with the candidates' prices; needed when w > 0."),
    progress: bool = typer.Option(True, help="Show a progress bar (on stderr)."),
) -> None:
    """Route every prompt of a file with a trained router; write decisions `lookahead eval
    --decisions` reads. Interrupted runs resume where they stopped."""
    from lookahead_router.catalogue import load_config
    from lookahead_router.evaluation.offline_route import read_prompts, route_file
    from lookahead_router.routers.base import Router
    try:
        # Everything is checked before the output is touched: input, config, router.
        records = read_prompts(input_file)
        config = load_config(config_file) if config_file else None
        weight = cost_weight if cost_weight is not None else (config.cost_weight if config else 0.0)
        if weight > 0 and config is None:
            raise LookaheadError("--cost-weight > 0 needs --config models.yaml (the candidates' prices)")
        router_dir = router or (config.router if config else None)
        if router_dir is None:
            raise LookaheadError("no router: pass --router DIR (or set 'router' in the --config file)")
        model = Router.load(router_dir)
        summary = route_file(model, records, output, batch_size, weight,
                             config.prices() if config else None, progress=progress)
    except _known_errors() as exc:
        _fail(exc)
    if summary.truncated_bytes:
        out.print(f"dropped a partial last line ({summary.truncated_bytes} bytes) left by an "
                  "interrupted run")
    shares = ", ".join(f"{m} {n}" for m, n in sorted(summary.models.items(), key=lambda kv: -kv[1]))
    out.print(f"{summary.total} prompts: {summary.skipped} already in {output} (skipped), "
              f"{summary.written} routed and written (w = {weight:g})" + (f": {shares}" if shares else ""),
              highlight=False)


@app.command("calibrate")
def calibrate_cmd(
    data: Path = typer.Option(..., help="Routing dataset (Parquet) with the candidates' recorded "
                              "responses and scores."),
    config_file: Path = typer.Option(..., "--config", help="Serving config (models.yaml) with prices."),
    scores: Optional[List[str]] = typer.Option(None, "--decisions", "--scores", help="Decisions files "
                                               "with per-candidate 'scores', merged: repeat the option, "
                                               "separate with commas, or quote a glob "
                                               "('runs/b/decisions/x/fold*.jsonl')."),
    router: Optional[Path] = typer.Option(None, help="Or: a trained router that scores the dataset's "
                                          "prompts (in-sample if it was trained on them)."),
    target_cost: Optional[float] = typer.Option(None, help="Average $ per 1,000 queries to stay under."),
    target_share: Optional[str] = typer.Option(None, help="MODEL=FRACTION: share of calls for MODEL."),
    out_dir: Path = typer.Option(Path("runs/calibration"), "--out", help="Folder for calibration.json "
                                 "and calibration.png."),
    benchmarks: Optional[List[str]] = typer.Option(None, help="Benchmarks (default: the test ones)."),
) -> None:
    """Sweep the cost weight w on a dataset and pick the one that meets a target average cost or
    share of calls; plot quality (average μn) against cost."""
    from rich.table import Table

    from lookahead_router import config as paths
    from lookahead_router.catalogue import load_config
    from lookahead_router.evaluation.calibration import calibrate, format_weight, parse_share
    try:
        if (target_cost is None) == (target_share is None):
            raise LookaheadError("give exactly one of --target-cost or --target-share")
        score_files = _expand(_split(scores))
        if bool(score_files) == (router is not None):
            raise LookaheadError("give exactly one of --decisions FILE... or --router DIR")
        share = parse_share(target_share) if target_share is not None else None
        prices = load_config(config_file).prices()
        result = calibrate(data, prices, score_files=score_files or None, router_dir=router,
                           target_cost=target_cost, target_share=share,
                           benchmarks=_split(benchmarks) or None,
                           alpaca_files=paths.alpaca_eval_files_dir(None), price_source=str(config_file),
                           log=lambda m: err.print(m, highlight=False))
        result.inputs["config"] = str(config_file)
        json_path, png_path = result.write(out_dir)
    except _known_errors() as exc:
        _fail(exc)
    cands = result.candidates
    table = Table(title=f"Cost weight calibration on {result.inputs['queries']} queries "
                        f"({', '.join(result.inputs['benchmarks'])})")
    table.add_column("row", no_wrap=True)
    for col in ("w", "$ / 1k queries", "avg μn"):
        table.add_column(col, justify="right", no_wrap=True)
    for c in cands:  # long model names: fold the header, keep the numbers narrow
        table.add_column(f"% calls {c}", justify="right", overflow="fold", max_width=14)

    def row(name, point, w="–"):
        table.add_row(name, w, f"{point['cost_per_1k']:.4f}", f"{point['avg_mu_n']:.1f}",
                      *(f"{point['shares'][c] * 100:.0f}" for c in cands))
    for c in cands:
        row(f"always {c}", result.references["candidates"][c])
    row("router, w = 0", result.references["router_w0"], "0")
    row("chosen", result.chosen, format_weight(result.chosen["w"]))
    out.print(table)
    target, chosen = result.chosen["target"], result.chosen
    if "cost_per_1k" in target:
        met = f"at most {target['cost_per_1k']:g} $ per 1,000 queries (chosen: {chosen['cost_per_1k']:.4g})"
    else:
        met = (f"{target['share'] * 100:g}% of calls to {target['model']} "
               f"(chosen: {chosen['shares'][target['model']] * 100:.1f}%)")
    out.print(f"target: {met}; wrote {json_path} and {png_path}", highlight=False)
    out.print(f"put this in models.yaml:\n  {result.to_dict()['cost_weight_line']}", highlight=False)


def _expand(values: list[str]) -> list[Path]:
    """Paths, with quoted globs expanded here (an unquoted one would pass only its first file to
    the option)."""
    import glob
    files: list[Path] = []
    for value in values:
        if glob.has_magic(value):
            matches = sorted(glob.glob(value))
            if not matches:
                raise LookaheadError(f"--decisions {value}: no file matches")
            files += map(Path, matches)
        else:
            files.append(Path(value))
    return files
