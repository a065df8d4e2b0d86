"""`lookahead collect`: generate candidates' responses, score them, build a routing dataset, and
verify the scorers against the paper's release."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from lookahead_router import config as paths
from lookahead_router.cli.common import _fail, _known_errors, _split, app, out
from lookahead_router.errors import LookaheadError

collect_app = typer.Typer(help="Routing data of your own: generate, score, build; verify the "
                          "scorers against the paper's release.", no_args_is_help=True)
app.add_typer(collect_app, name="collect")


@collect_app.command("prompts")
def prompts_cmd(
    data: Path = typer.Option(..., help="Routing dataset (Parquet), e.g. runs/paper.parquet."),
    out_file: Path = typer.Option(..., "--out", help="Prompts file (JSONL) to write."),
    sources: Optional[List[str]] = typer.Option(None, "--sources", "--source", help="Sources to export "
                                                "(default: all)."),
    limit: Optional[int] = typer.Option(None, help="At most this many prompts per source (a seeded sample)."),
    split: Optional[str] = typer.Option(None, help="Give every prompt this split; 'none' leaves it "
                                        "to `collect build` (default: the dataset's)."),
    seed: int = typer.Option(0, help="Seed of the --limit sample."),
) -> None:
    """Write a prompts file from a routing dataset, with the references and tests the math and
    code scorers need (GSM8K, MATH, MBPP, HumanEval)."""
    from lookahead_router.collection.tasks import tasks_from_dataset
    from lookahead_router.data.dataset import RoutingDataset
    try:
        rows = tasks_from_dataset(RoutingDataset.load(data), _split(sources) or None, limit, seed)
        for row in rows:
            if split == "none":
                del row["split"]
            elif split:
                row["split"] = split
    except _known_errors() as exc:
        _fail(exc)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out.print(f"wrote {len(rows)} prompts to {out_file}")


@collect_app.command("generate")
def generate_cmd(
    prompts: Path = typer.Option(..., help="Prompts file (JSONL: id, prompt or messages, ...)."),
    models_file: Path = typer.Option(..., "--config", "--models", help="Models YAML (the serving config "
                                     "`lookahead serve --config` reads): one base_url, local or replay entry "
                                     "per candidate."),
    out_dir: Path = typer.Option(..., "--out", help="Collection folder (responses/ is written here)."),
    only: Optional[List[str]] = typer.Option(None, "--candidates", "--model", help="Generate for these "
                                             "candidates only (default: every one in the config)."),
    temperature: Optional[float] = typer.Option(None, help="Default: the YAML's, else 0.8."),
    top_p: Optional[float] = typer.Option(None, help="Default: the YAML's, else 0.95."),
    max_tokens: Optional[int] = typer.Option(None, help="Default: the YAML's, else 2048."),
    concurrency: Optional[int] = typer.Option(None, help="Requests in flight per server (default 16)."),
    max_retries: Optional[int] = typer.Option(None, help="Retries per request (default 5)."),
    seed: Optional[int] = typer.Option(None, help="Sampling seed for every candidate (default: the "
                                       "YAML's generation seed, else none)."),
) -> None:
    """Every candidate's response to every prompt; re-running skips finished pairs."""
    from lookahead_router.catalogue import load_config
    from lookahead_router.collection.generate import generate
    from lookahead_router.collection.tasks import read_tasks
    try:
        tasks = read_tasks(prompts)
        config = load_config(models_file)
        given = dict(temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                     concurrency=concurrency, max_retries=max_retries, seed=seed)
        config.generation = type(config.generation).model_validate(   # (validated like the YAML)
            {**config.generation.model_dump(), **{k: v for k, v in given.items() if v is not None}})
        summary = generate(tasks, config, out_dir, _split(only) or None)
    except _known_errors() as exc:
        _fail(exc)
    out.print(f"{summary.requested} responses requested ({summary.skipped} already there) in "
              f"{summary.seconds:.1f}s; written: {summary.written or 0}")
    if summary.failed:
        out.print(f"[yellow]failed after retries: {summary.failed} — see {out_dir}/errors.jsonl; "
                  "run the same command again to retry them[/]")
        raise typer.Exit(1)


@collect_app.command("score")
def score_cmd(
    collection: Path = typer.Option(..., "--dir", help="Collection folder (from `collect generate`)."),
    prompts: Path = typer.Option(..., help="The prompts file the responses answer."),
    scorer_name: str = typer.Option(..., "--scorer", help="math | code | reward | judge."),
    only: Optional[List[str]] = typer.Option(None, "--candidates", "--model", help="Score these "
                                             "candidates only (default: every one with responses)."),
    workers: Optional[int] = typer.Option(None, help="Parallel sandboxes / grading processes "
                                          "(default: CPU count)."),
    timeout: float = typer.Option(10.0, help="code: seconds per program (wall clock)."),
    memory_mb: int = typer.Option(1024, help="code: address-space limit per program."),
    reward_model: Optional[str] = typer.Option(None, help="reward: hub id or folder of a sequence-"
                                               "classification reward model."),
    batch_size: int = typer.Option(8, help="reward: responses per forward pass."),
    judge_url: Optional[str] = typer.Option(None, help="judge: base URL of an OpenAI-compatible server."),
    judge_model: Optional[str] = typer.Option(None, help="judge: the judge's model id."),
    judge_key_env: Optional[str] = typer.Option(None, help="judge: environment variable with its API key."),
    concurrency: int = typer.Option(8, help="judge: requests in flight."),
) -> None:
    """Score every generated response the scorer applies to (math: prompts with a reference;
    code: prompts with tests; reward, judge: all). Re-running skips scored pairs."""
    import os

    from lookahead_router.collection.score import make_scorer, score_collection
    from lookahead_router.collection.tasks import read_tasks
    try:
        options: dict = {}
        if scorer_name == "code":
            from lookahead_router.collection.sandbox import Limits
            options = dict(limits=Limits(timeout_s=timeout, memory_mb=memory_mb), workers=workers)
        elif scorer_name == "math":
            options = dict(workers=workers)
        elif scorer_name == "reward":
            if not reward_model:
                raise LookaheadError("--scorer reward needs --reward-model (a hub id or a folder)")
            options = dict(model=reward_model, batch_size=batch_size)
        elif scorer_name == "judge":
            if not (judge_url and judge_model):
                raise LookaheadError("--scorer judge needs --judge-url and --judge-model")
            key = os.environ.get(judge_key_env) if judge_key_env else None
            if judge_key_env and key is None:
                raise LookaheadError(f"--judge-key-env: environment variable {judge_key_env} is not set")
            options = dict(base_url=judge_url, model=judge_model, api_key=key, concurrency=concurrency)
        scorer = make_scorer(scorer_name, **options)
        summary = score_collection(read_tasks(prompts), collection, scorer, _split(only) or None)
    except _known_errors() as exc:
        _fail(exc)
    table = Table(title=f"{scorer_name} scores in {collection}/scores/{scorer_name}/")
    for col in ("model", "scored now", "unscorable", "mean score"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for model, mean in summary.mean.items():
        table.add_row(model, str(summary.scored.get(model, 0)), str(summary.unscorable.get(model, 0)),
                      f"{mean:.3f}")
    out.print(table)
    out.print(f"{summary.skipped} pairs were scored already; {summary.not_applicable} prompts are "
              f"not for the {scorer_name} scorer.")
    if summary.n_failed:
        first = "; ".join(f"{m}: {d}" for m, d in summary.failed.items())
        out.print(f"[yellow]{summary.n_failed} pairs failed and were not stored ({first[:300]}); "
                  "run the same command again to retry them[/]", highlight=False)
        raise typer.Exit(1)


@collect_app.command("build")
def build_cmd(
    collection: Path = typer.Option(..., "--dir", help="Collection folder."),
    prompts: Path = typer.Option(..., help="The prompts file."),
    out_file: Path = typer.Option(..., "--out", help="Routing dataset (Parquet) to write."),
    models: Optional[List[str]] = typer.Option(None, "--candidates", "--models", help="Candidates in "
                                               "column order (default: every model with responses, sorted)."),
    scorers: Optional[List[str]] = typer.Option(None, help="Scorer priority (default: code, math, "
                                                "judge, reward: the first that scored a pair wins)."),
    threshold: float = typer.Option(0.8, help="Label threshold on the min-max normalised score."),
    test_fraction: float = typer.Option(0.2, help="Share of each source's unsplit prompts kept for testing."),
    keep_ties: bool = typer.Option(False, help="Keep prompts every candidate scores the same on."),
    seed: int = typer.Option(0, help="Seed of the draw that holds --test-fraction of each source out."),
) -> None:
    """Responses + scores -> a routing dataset for `lookahead train` and `lookahead benchmark`."""
    from lookahead_router.collection.build import build_dataset
    from lookahead_router.collection.tasks import read_tasks
    try:
        ds, report = build_dataset(read_tasks(prompts), collection, _split(models) or None,
                                   _split(scorers) or None, threshold, test_fraction, keep_ties, seed)
        ds.save(out_file)
    except _known_errors() as exc:
        _fail(exc)
    out.print(f"{report.prompts} prompts: {report.kept} kept, {report.dropped_ties} dropped (every "
              f"candidate scored the same); pairs per scorer {report.scorers_used}; unscored pairs "
              f"{report.unscored_pairs}")
    for source, stats in report.per_source.items():
        table = Table(title=f"{source}: {stats['splits']}")
        for col in ("candidate", "best response %", f"label 1 % (threshold {threshold})"):
            table.add_column(col, justify="left" if col == "candidate" else "right")
        for c in ds.candidates:
            table.add_row(c, f"{stats['best_share'][c]:.1f}", f"{stats['positive_share'][c]:.1f}")
        out.print(table)
    out.print(f"wrote {out_file}: {len(ds)} queries x {len(ds.candidates)} candidates")


@collect_app.command("verify-release")
def verify_cmd(
    src: Optional[Path] = typer.Option(None, help=f"Release folder (default: ${paths.DATA_ENV} "
                                       "or ../shared/lookahead-data)."),
    out_dir: Path = typer.Option(Path("runs/verify-release"), "--out", help="Report folder."),
    checks: Optional[List[str]] = typer.Option(None, "--checks", "--check", help="HumanEval, MBPP, GSM8K, MATH, "
                                               "MT-Bench, SelfOSS (default: all)."),
    candidates: Optional[List[str]] = typer.Option(None, help="Default: the paper's five."),
    workers: Optional[int] = typer.Option(None, help="Parallel sandboxes (default: CPU count)."),
    timeout: float = typer.Option(10.0, help="Seconds per program (wall clock)."),
    selfoss_validation_only: bool = typer.Option(False, help="SelfOSS: only its 1,000 validation "
                                                 "prompts (all 4,335 take about 11 min on 2 cores)."),
) -> None:
    """Re-grade the release's responses with our scorers; report agreement with its outcomes."""
    from lookahead_router.collection.sandbox import Limits
    from lookahead_router.collection.verify import CHECKS, markdown, run_checks, write_report
    try:
        root = paths.release_dir(src)
        selfoss_ids = None
        if selfoss_validation_only:
            from lookahead_router.data.release import SELFOSS_FOLDER
            selfoss_ids = json.loads(gzip.open(root / SELFOSS_FOLDER / "eval_ids.json.gz").read())
        rows, seconds = run_checks(root, _split(checks) or CHECKS, _split(candidates) or None,
                                   Limits(timeout_s=timeout), workers, selfoss_ids=selfoss_ids)
        report = write_report(rows, seconds, out_dir)
    except _known_errors() as exc:
        _fail(exc)
    out.print(markdown(rows, seconds), markup=False, highlight=False)
    out.print(f"wrote {report} and verification.json")
