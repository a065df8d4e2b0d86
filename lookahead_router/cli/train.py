"""`lookahead train` and `lookahead benchmark`."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import List, Optional

import typer

from lookahead_router.cli.common import (_fail, _known_errors, _numbers, _split, app, out, parse_value,
                                         print_report)
from lookahead_router.data.splits import PROTOCOL_HELP, parse_protocol
from lookahead_router.errors import LookaheadError


def _options(pairs: list[str]) -> dict:
    """KEY=VALUE pairs -> {key: value} (values parsed as JSON when they parse)."""
    opts = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise LookaheadError(f"--set expects KEY=VALUE, got {pair!r}")
        opts[key.strip()] = parse_value(value.strip())
    return opts


def _blame_set(exc: Exception, given: dict[str, str]) -> Exception:
    """A router option's error caused by a ``--set`` pair, prefixed with the pair as typed
    (``given``: option -> "KEY=VALUE"), so the message names the flag to fix."""
    from lookahead_router.routers.config import option_of
    key = option_of(exc)
    return LookaheadError(f"--set {given[key]}: {exc}") if key in given else exc


# ---- `lookahead train`'s router flags, generated from the routers' configs ------------------------
# Every option of the two base configs (what the embedding routers and the neural routers share,
# training engine included) is a flag; a router's own options go through --set. The command's
# --resume and --checkpoints stand for the engine's resume and output_dir.
NOT_FLAGS = {"progress", "resume", "output_dir"}
FLAG_NAMES = {"finetune": "--finetune/--frozen"}


def router_flags() -> dict:
    from lookahead_router.routers.config import EmbeddingConfig, NeuralConfig
    flags: dict = {}
    for config in (NeuralConfig, EmbeddingConfig):
        for info in config.options():
            if info.name not in NOT_FLAGS:
                flags.setdefault(info.name, info)
    return flags


def _flag_parameters() -> list[inspect.Parameter]:
    params = []
    for name, info in router_flags().items():
        flag = FLAG_NAMES.get(name, "--" + name.replace("_", "-") + ("/--no-" + name.replace("_", "-")
                                                                    if info.kind is bool else ""))
        usual = "" if info.default is None or info.kind is bool else f" (usual default: {info.default})"
        help_text = info.help + usual
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[info.kind],
                                        default=typer.Option(None, flag, help=help_text,
                                                             rich_help_panel="Router options (each router's "
                                                             "defaults: lookahead routers --options NAME)")))
    return params


def train_cmd(
    router: str = typer.Option(..., help="Router name (see `lookahead routers`)."),
    data: Path = typer.Option(..., help="Routing dataset (Parquet) to train on."),
    out_dir: Path = typer.Option(..., "--out", help="Folder to save the trained router in."),
    splits: Optional[List[str]] = typer.Option(None, help="Train on rows of these splits only "
                                               "(default: every row)."),
    sources: Optional[List[str]] = typer.Option(None, help="Train on rows of these sources only "
                                                "(default: every source)."),
    candidates: Optional[List[str]] = typer.Option(None, help="Route among these candidates "
                                                   "(default: all in the dataset)."),
    validation_split: Optional[str] = typer.Option(None, help="Rows of this split choose the best "
                                                   "checkpoint (default: 10% carved from training)."),
    holdout: Optional[float] = typer.Option(None, help="Keep this share of every source's rows out of "
                                            "training, then report the router's quality on them beside the "
                                            "candidates, task-best, random and oracle (saved in OUT/holdout/)."),
    preset: Optional[str] = typer.Option(None, help="Start from a benchmark preset's options for this "
                                         "router (smoke, cpu, gpu); the router options override them."),
    resume: bool = typer.Option(False, help="Continue from the last checkpoint in --checkpoints."),
    checkpoints: Optional[Path] = typer.Option(None, help="Checkpoint folder (default: temporary)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Any other router option, KEY=VALUE "
                                             "(repeatable; values parsed as JSON, e.g. k=50, finetune=true)."),
    **flags,
) -> None:
    """Train one router and save it (router.json + state.safetensors). Runs unchanged under
    `accelerate launch [--multi_gpu --num_processes N] -m lookahead_router.cli.main train ...`
    (N processes, GPUs or CPUs; the main process saves)."""
    from lookahead_router.data.dataset import RoutingDataset
    from lookahead_router.precision import resolve_precision
    from lookahead_router.routers.registry import make_router
    from lookahead_router.training.engine import distributed_state
    state = distributed_state()
    given = {**flags, "resume": resume or None, "output_dir": str(checkpoints) if checkpoints else None}
    try:
        from lookahead_router.evaluation.presets import load_preset
        base = load_preset(preset).options(router) if preset else {}
        set_pairs = {pair.partition("=")[0].strip(): pair.strip() for pair in _split(set_)}
        options = base | {k: v for k, v in given.items() if v is not None} | _options(_split(set_))
        try:   # a bad option fails here, before the dataset is read
            model = make_router(router, **options)
        except LookaheadError as exc:
            raise _blame_set(exc, set_pairs) from None
        ds = RoutingDataset.load(data)
        if candidates:
            ds = ds.select_candidates(_split(candidates))
        validation = None
        if validation_split:
            validation = ds.where(split=validation_split)   # (an unknown split is an error there)
            ds = ds.subset(ds.queries["split"].to_numpy() != validation_split)
        if splits or sources:
            ds = ds.where(split=_split(splits) or None, source=_split(sources) or None)
        held_out = None
        if holdout:
            from lookahead_router.evaluation.holdout import split_holdout
            ds, held_out = split_holdout(ds, holdout, int(options.get("seed") or 0))
        # `lookahead collect build --threshold` records the label threshold in the dataset: it
        # becomes one of the router's options, so router.json keeps it
        if model.neural and "threshold" not in options and "label_threshold" in ds.metadata:
            options["threshold"] = float(ds.metadata["label_threshold"])
            model = make_router(router, **options)
        out.print(f"training {model!r} on {len(ds)} rows x {len(ds.candidates)} candidates "
                  f"(torch engine in {resolve_precision()})")
        model.fit(ds, validation)
        if state.is_main_process:
            model.save(out_dir)
            if held_out is not None:
                from lookahead_router.evaluation.holdout import evaluate_holdout
                out.print(f"routing the {len(held_out)} held-out rows")
                holdout_report = evaluate_holdout(model, ds, held_out, out_dir)
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
    if held_out is not None:
        from lookahead_router.evaluation.holdout import summary
        print_report(holdout_report)
        out.print(summary(holdout_report, model.name), highlight=False)
        out.print(f"held-out decisions and report: {out_dir}/holdout/")


# Typer reads a command's options from its signature: the router flags join the written ones.
_written = [p for p in inspect.signature(train_cmd).parameters.values() if p.kind is not p.VAR_KEYWORD]
train_cmd.__signature__ = inspect.Signature(_written + _flag_parameters())
app.command("train")(train_cmd)


@app.command("routers")
def routers_cmd(
    options: bool = typer.Option(False, "--options", help="Also list each router's options: type, default "
                                 "and meaning (what --set and the router flags of `train` take)."),
    names: Optional[List[str]] = typer.Argument(None, help="Only these routers (default: all)."),
) -> None:
    """List the routers `train` and `benchmark` know, by group, each with its whole description;
    with --options, every option of each."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from lookahead_router.choices import check_choices
    from lookahead_router.routers.registry import GROUPS, ROUTERS, make_router
    from lookahead_router.routers.base import RouterError
    try:
        chosen = _split(names) or list(ROUTERS)
        check_choices("router", chosen, sorted(ROUTERS), RouterError)
    except _known_errors() as exc:
        _fail(exc)
    # Descriptions fold at the terminal's width instead of being cut; Text() keeps rich from
    # reading "[...]" in them as markup.
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("router", no_wrap=True)
    table.add_column("description", overflow="fold")
    for group, what in GROUPS.items():
        members = [n for n in chosen if ROUTERS[n].group == group]
        if members:
            table.add_row(Text(group, style="bold"), Text(what, style="italic"))
            for name in members:
                table.add_row(Text("  " + name), Text(make_router(name).summary()))
            table.add_section()
    out.print(table, highlight=False)
    if options:
        for name in chosen:
            router = make_router(name)
            detail = Table(title=f"{name} ({type(router.config).__name__})", box=box.SIMPLE_HEAD, pad_edge=False,
                           title_justify="left")
            for column in ("option", "type", "default", "meaning"):
                detail.add_column(column, overflow="fold", no_wrap=column == "option")
            values = router.config.flat()
            for info in router.config.options():
                value = values[info.name]
                detail.add_row(info.name, info.kind.__name__ + (" | null" if info.optional else ""),
                               Text(repr(value)), Text(info.help))
            out.print(detail, highlight=False)


@app.command("benchmark")
def benchmark_cmd(
    data: Path = typer.Option(..., help="Routing dataset (Parquet)."),
    routers: Optional[List[str]] = typer.Option(None, help="Routers to train (default: the preset's: linear, "
                                                "domain, the six baselines with classifiers on both backbones, Lookahead CLM / "
                                                "MLM with their w/o-RM ablations and the response-aware ceilings)."),
    protocol: str = typer.Option("cv5", help=PROTOCOL_HELP + " (as in `lookahead data folds`)."),
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
    from lookahead_router.data.dataset import RoutingDataset
    from lookahead_router.evaluation.benchmark import run_benchmark
    from lookahead_router.evaluation.presets import load_preset
    try:
        chosen = load_preset(preset)
        names = _split(routers) or list(chosen.default_routers)
        seed_list = _numbers(seeds, "--seeds")
        parse_protocol(protocol)   # a bad name fails before the dataset is read
        overrides = _overrides(_split(set_), names, chosen)
        ds = RoutingDataset.load(data)
        report, meta = run_benchmark(ds, names, protocol, chosen, out_dir, seed_list, add_train, overrides,
                                     log=lambda m: out.print(m, highlight=False), export=export)
    except _known_errors() as exc:
        _fail(exc)
    print_report(report)
    out.print(f"wall time {meta['wall_s'] / 60:.1f} min, peak memory {meta['peak_rss_mib']:.0f} MiB "
              f"on {meta['device']} in {meta['precision']}; wrote {out_dir}/report.json, report.md, mu_n.png")
    sys.stdout.flush()


def _overrides(pairs: list[str], names: list[str], preset) -> dict[str, dict]:
    """``--set ROUTER.KEY=VALUE`` pairs -> per router of the run, its option overrides; each router
    given some is built once here, so that a bad key or value fails now, naming its ``--set``,
    not after hours of training the routers before it. A ROUTER that is neither a router of the
    run nor a preset group of one is an error (it would otherwise change nothing)."""
    from lookahead_router.choices import unknown_message
    from lookahead_router.routers.registry import make_router
    overrides: dict[str, dict] = {}
    typed: dict[str, dict[str, str]] = {}   # router -> option -> the pair as typed
    targets = list(dict.fromkeys([*names, *filter(None, map(preset.group, names))]))
    for pair in pairs:
        target, dot, rest = pair.partition(".")
        if not dot:
            raise LookaheadError(f"--set expects ROUTER.KEY=VALUE, got {pair!r}")
        if target not in targets:
            raise LookaheadError(f"--set {pair}: " + unknown_message(
                "router or preset group in this run", [target], targets, "routers and groups"))
        for name in names:
            if target in (name, preset.group(name)):
                overrides.setdefault(name, {}).update(_options([rest]))
                typed.setdefault(name, {})[rest.partition("=")[0].strip()] = pair
    for name, opts in overrides.items():
        try:
            make_router(name, **{**preset.options(name), **opts})
        except LookaheadError as exc:
            raise _blame_set(exc, typed[name]) from None
    return overrides
