"""`lookahead train` and `lookahead benchmark`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from lookahead_router.cli.common import _fail, _known_errors, _split, app, out, parse_value


def _options(pairs: list[str]) -> dict:
    """KEY=VALUE pairs -> {key: value} (values parsed as JSON when they parse)."""
    opts = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        opts[key.strip()] = parse_value(value.strip())
    return opts


@app.command("train")
def train_cmd(
    router: str = typer.Option(..., help="Router name (see `lookahead routers`)."),
    data: Path = typer.Option(..., help="Routing dataset (Parquet) to train on."),
    out_dir: Path = typer.Option(..., "--out", help="Folder to save the trained router in."),
    splits: Optional[List[str]] = typer.Option(None, help="Train on rows of these splits only "
                                               "(default: every row)."),
    sources: Optional[List[str]] = typer.Option(None, help="Train on rows of these sources only."),
    candidates: Optional[List[str]] = typer.Option(None, help="Route among these candidates "
                                                   "(default: all in the dataset)."),
    validation_split: Optional[str] = typer.Option(None, help="Rows of this split choose the best "
                                                   "checkpoint (default: 10% carved from training)."),
    backbone: Optional[str] = typer.Option(None, help="Hub id, local path, or minilm / smollm2 / "
                                           "tiny-bert / tiny-llama."),
    max_length: Optional[int] = typer.Option(None, help="Tokens per prompt (longer prompts are "
                                             "truncated, keeping the start)."),
    epochs: Optional[float] = typer.Option(None, help="Epochs at most (with --patience, training may stop earlier)."),
    patience: Optional[int] = typer.Option(None, help="Stop after this many validations without a better "
                                           "average μn (0: never stop early)."),
    balance: Optional[str] = typer.Option(None, help="none | sources: weigh each source in the loss as "
                                          "average μn weighs it (linear, domain: also auto, chosen on validation)."),
    batch_size: Optional[int] = typer.Option(None, help="Per process."),
    lr: Optional[float] = typer.Option(None),
    grad_accum: Optional[int] = typer.Option(None, help="Gradient accumulation steps."),
    eval_every: Optional[int] = typer.Option(None, help="Validate and checkpoint every N steps."),
    finetune: Optional[bool] = typer.Option(None, "--finetune/--frozen", help="Train the whole backbone, or "
                                            "only its top --layers over cached states of the layers below."),
    layers: Optional[int] = typer.Option(None, help="Top layers trained when --frozen (default 1)."),
    preset: Optional[str] = typer.Option(None, help="Start from a benchmark preset's options for this "
                                         "router (smoke, cpu, gpu); the flags above override them."),
    seed: Optional[int] = typer.Option(None),
    resume: bool = typer.Option(False, help="Continue from the last checkpoint in --checkpoints."),
    checkpoints: Optional[Path] = typer.Option(None, help="Checkpoint folder (default: temporary)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Any other router option, KEY=VALUE."),
) -> None:
    """Train one router and save it (router.json + state.safetensors). Runs unchanged under
    `accelerate launch [--multi_gpu --num_processes N] -m lookahead_router.cli.main train ...`
    (N processes, GPUs or CPUs; the main process saves)."""
    from lookahead_router.data.dataset import RoutingDataset
    from lookahead_router.precision import resolve_precision
    from lookahead_router.routers.base import make_router
    from lookahead_router.routers.neural import NeuralRouter
    from lookahead_router.training.engine import distributed_state
    state = distributed_state()
    given = dict(backbone=backbone, max_length=max_length, epochs=epochs, patience=patience, balance=balance,
                 batch_size=batch_size, lr=lr,
                 grad_accum=grad_accum, eval_every=eval_every, finetune=finetune, layers=layers, seed=seed,
                 resume=resume or None, output_dir=str(checkpoints) if checkpoints else None)
    try:
        from lookahead_router.evaluation.presets import load_preset
        base = load_preset(preset).options(router) if preset else {}
        options = base | {k: v for k, v in given.items() if v is not None} | _options(_split(set_))
        ds = RoutingDataset.load(data)
        if candidates:
            ds = ds.select_candidates(_split(candidates))
        validation = None
        if validation_split:
            validation = ds.where(split=validation_split)
            ds = ds.subset(ds.queries["split"].to_numpy() != validation_split)
            if not len(validation):
                raise ValueError(f"{data}: no rows with split {validation_split!r} to validate on")
        if splits or sources:
            ds = ds.where(split=_split(splits) or None, source=_split(sources) or None)
        model = make_router(router, **options)
        # `lookahead collect build --threshold` records the label threshold in the dataset: it
        # becomes one of the router's options, so router.json keeps it
        if isinstance(model, NeuralRouter) and "threshold" not in options and "label_threshold" in ds.metadata:
            options["threshold"] = float(ds.metadata["label_threshold"])
            model = make_router(router, **options)
        out.print(f"training {model!r} on {len(ds)} rows x {len(ds.candidates)} candidates "
                  f"(torch engine in {resolve_precision()})")
        model.fit(ds, validation)
        if state.is_main_process:
            model.save(out_dir)
    except _known_errors() as exc:
        _fail(exc)
    if not state.is_main_process:
        return
    result = getattr(model, "train_result", None)
    if result is not None:
        stop = " (stopped early: no better validation since)" if result.stopped_early else ""
        out.print(f"best checkpoint: step {result.best_step} of {result.steps}{stop}, validation average "
                  f"μn {100 * result.best_metric:.1f} (0 = a random pick, 100 = the best candidate "
                  f"every time; training in {result.precision})")
    chosen = getattr(model, "chosen", None)
    if isinstance(chosen, dict):   # linear, domain: the grid point chosen by cross-validation
        best = max(model.validation.values())
        out.print(f"chosen by cross-validated average μn ({best:.1f}): "
                  + ", ".join(f"{k}={v}" for k, v in chosen.items()))
    out.print(f"saved {model.name} router to {out_dir}")


@app.command("routers")
def routers_cmd() -> None:
    """List the routers `train` and `benchmark` know."""
    from lookahead_router.routers.base import ROUTERS, make_router
    for name in sorted(ROUTERS):
        out.print(f"{name:24s} {make_router(name).summary()}", highlight=False)


@app.command("benchmark")
def benchmark_cmd(
    data: Path = typer.Option(..., help="Routing dataset (Parquet)."),
    routers: Optional[List[str]] = typer.Option(None, help="Routers to train (default: the preset's: linear, "
                                                "domain, the six baselines with classifiers on both backbones, Lookahead CLM / "
                                                "MLM with their w/o-RM ablations and the response-aware ceilings)."),
    protocol: str = typer.Option("cv5", help="cv5 (5-fold, stratified by benchmark), lobo, split."),
    preset: str = typer.Option("cpu", help="smoke, cpu or gpu (lookahead_router/evaluation/presets/)."),
    out_dir: Path = typer.Option(Path("runs/benchmark"), "--out", help="Folder for the report, chart "
                                 "and per-fold decisions (finished folds are reused on re-runs)."),
    seeds: List[str] = typer.Option(["0"], help="Seeds: each repeats the protocol with its own fold "
                                    "assignment and initialisation, e.g. 0,1,2."),
    add_train: bool = typer.Option(True, help="Add training-only rows (SelfOSS) to every training fold."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a router option: "
                                             "ROUTER.KEY=VALUE (ROUTER: a name, or a preset group: similarity, linear, "
                                             "mlm, clm, lookahead-mlm, lookahead-clm, ceiling-full)."),
    export: Optional[Path] = typer.Option(None, help="Also write the report as EXPORT.json, .md and .png "
                                          "(e.g. bench/results/quality_cpu_cv5)."),
) -> None:
    """Train every router under a protocol, over seeds, and print the Table 1 report with mean ±
    std (JSON with paired comparisons, markdown and a bar chart of μn go to --out)."""
    from rich.console import Console

    from lookahead_router.data.dataset import RoutingDataset
    from lookahead_router.evaluation.benchmark import run_benchmark
    from lookahead_router.evaluation.presets import load_preset
    try:
        chosen = load_preset(preset)
        names = _split(routers) or list(chosen.default_routers)
        seed_list = [int(s) for s in _split(seeds)]
        overrides: dict[str, dict] = {}
        for target, opts in _scoped(_split(set_)).items():
            for name in names:
                if target in (name, chosen.group(name)):
                    overrides.setdefault(name, {}).update(opts)
        ds = RoutingDataset.load(data)
        report, meta = run_benchmark(ds, names, protocol, chosen, out_dir, seed_list, add_train, overrides,
                                     log=lambda m: out.print(m, highlight=False), export=export)
    except _known_errors() as exc:
        _fail(exc)
    Console(width=max(out.width, 240)).print(report.to_rich())
    out.print(f"wall time {meta['wall_s'] / 60:.1f} min, peak memory {meta['peak_rss_mib']:.0f} MiB "
              f"on {meta['device']} in {meta['precision']}; wrote {out_dir}/report.json, report.md, mu_n.png")
    sys.stdout.flush()


def _scoped(pairs: list[str]) -> dict[str, dict]:
    scoped: dict[str, dict] = {}
    for pair in pairs:
        target, dot, rest = pair.partition(".")
        if not dot:
            raise ValueError(f"--set expects ROUTER.KEY=VALUE, got {pair!r}")
        scoped.setdefault(target, {}).update(_options([rest]))
    return scoped
