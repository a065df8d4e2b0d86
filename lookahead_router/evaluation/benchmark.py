"""`lookahead benchmark`: train every router under one protocol, over seeds, and evaluate all of
them in one report with paired comparisons.

For each seed and each fold of the protocol, each router is built with the preset's options (its
``seed`` set to the run's seed), fitted on the training fold (checkpoints chosen on a validation
split carved from that fold) and asked to score the test fold. Seeds change the fold assignment
(cv) and the routers' initialisation; lobo's folds are fixed. Beside the trained routers the
report has the reference rows (each candidate, Random, Oracle) and ``task-best``, the per-benchmark
lookup that reads the benchmark label.

Finished (router, seed, fold) decisions are kept under ``OUT/decisions/<router>/seed<S>/``:
re-running the same command after an interruption skips them.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lookahead_router.choices import check_choices
from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.data.splits import Fold, ProtocolError, make_folds, parse_protocol
from lookahead_router.evaluation.comparisons import Comparison, compare, comparisons_markdown
from lookahead_router.evaluation.decisions import Decisions, task_best_decisions
from lookahead_router.evaluation.presets import Preset, load_preset
from lookahead_router.evaluation.report import Report, aggregate, evaluate
from lookahead_router.precision import environment, resolve_precision
from lookahead_router.errors import LookaheadError, RouterError
from lookahead_router.routers.registry import ROUTERS, make_router
from lookahead_router.routers.registry import names as routers_in

# the groups of the one table of routers (routers/registry.py)
DEPLOYABLE = routers_in("reference")   # what a user could deploy instead: every router is judged against both
BASELINES = routers_in("baseline")
LOOKAHEAD = routers_in("lookahead")
CEILINGS = routers_in("ceiling")
MLM_ABLATIONS = routers_in("ablation")
TASK_BEST = "task-best"


def subsample(ds: RoutingDataset, per_source: int, seed: int = 0) -> RoutingDataset:
    rng = np.random.default_rng(seed)
    source = ds.queries["source"].to_numpy()
    rows = [rng.permutation(np.flatnonzero(source == s))[:per_source] for s in ds.sources]
    return ds.subset(np.sort(np.concatenate(rows)))


def run_benchmark(ds: RoutingDataset, routers: Sequence[str] | None = None, protocol: str = "cv5",
                  preset: str | Preset = "cpu", out_dir: str | Path = "runs/benchmark", seeds: Sequence[int] = (0,),
                  add_train: bool = True, overrides: dict | None = None, progress: bool = True,
                  log: Callable[[str], None] = print, export: str | Path | None = None,
                  folds: Sequence[int] | None = None, train_fraction: float = 1.0,
                  decisions_dir: str | Path | None = None) -> tuple[Report, dict]:
    """Train and evaluate ``routers`` (default: the preset's); write report.json, report.md and
    mu_n.png to ``out_dir`` (and copies to ``export``.json / .md / .png when given).

    The analyses (``lookahead analyze``) narrow a run: ``folds`` keeps only those fold indices (the
    report then covers their test rows), ``train_fraction`` trains on that share of each training
    fold (stratified by source, the same rows for every router of a seed), and ``decisions_dir``
    reads and writes the per-fold decisions elsewhere than ``out_dir/decisions``, so that a run
    can reuse another run's finished folds."""
    preset = load_preset(preset) if isinstance(preset, str) else preset
    routers = list(routers or preset.default_routers)
    check_choices("router", routers, sorted(ROUTERS), RouterError)
    parsed = parse_protocol(protocol)
    protocol = parsed.name   # recorded canonically: CV5 and cv5 reuse the same finished folds
    if len(ds.candidates) < 2:
        raise RouterError(f"routing needs at least two candidates; the dataset has {ds.candidates}")
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise LookaheadError(f"seeds must be distinct and at least one, got {seeds}")
    if preset.per_source:
        ds = subsample(ds, preset.per_source, 0)
    if not 0.0 < train_fraction <= 1.0:
        raise LookaheadError(f"train_fraction must lie in (0, 1], got {train_fraction}")
    all_folds = {s: make_folds(ds, parsed, seed=s, add_train=add_train) for s in seeds}
    keep = range(len(all_folds[seeds[0]])) if folds is None else list(folds)
    if not keep or any(not 0 <= i < len(all_folds[seeds[0]]) for i in keep):
        raise ProtocolError(f"folds {list(keep)} outside the protocol's 0..{len(all_folds[seeds[0]]) - 1}")
    folds = {s: [_train_share(ds, fs[i], train_fraction, s) for i in keep] for s, fs in all_folds.items()}
    for f in folds[seeds[0]]:
        if not len(f.train) or not len(f.test):
            raise ProtocolError(f"fold {f.name} has {len(f.train)} training and {len(f.test)} test rows")
    out_dir = Path(out_dir)
    decisions_dir = Path(decisions_dir) if decisions_dir is not None else out_dir / "decisions"
    started = time.perf_counter()
    options = {r: {**preset.options(r), **(overrides or {}).get(r, {})} for r in routers}
    timings: dict[str, dict] = {r: {"fit_s": 0.0, "score_s": 0.0, "folds": {}} for r in routers}
    decisions: dict[str, list[Decisions]] = {r: [] for r in [*routers, TASK_BEST]}
    for router in routers:
        _check_settings(decisions_dir / router, {
            "options": options[router], "protocol": protocol, "add_train": add_train, "preset": preset.name,
            "rows": len(ds), "precision": resolve_precision(),
            **({"train_fraction": train_fraction} if train_fraction < 1 else {})})
    for seed in seeds:
        decisions[TASK_BEST].append(Decisions.concat(TASK_BEST, [task_best_decisions(ds.subset(f.train), ds.subset(f.test))
                                                      for f in folds[seed]]))
        for router in routers:
            opts = {**options[router], "progress": progress, **({"seed": seed} if ROUTERS[router].cls.seeded else {})}
            parts = [_fold_decisions(ds, router, opts, fold, decisions_dir / router / f"seed{seed}",
                                     timings[router], f"seed{seed}/{fold.name}", log) for fold in folds[seed]]
            decisions[router].append(Decisions.concat(router, parts))
    reports = [evaluate(ds, decisions=[decisions[r][i] for r in [TASK_BEST, *routers]], progress=progress)
               for i in range(len(seeds))]
    report = aggregate(reports)
    comparisons = compare(ds, report.benchmarks, decisions, headline_pairs(report, routers))
    meta = {"preset": preset.name, "preset_description": preset.description, "protocol": protocol,
            "add_train": add_train, "seeds": seeds, "folds": [f.name for f in folds[seeds[0]]],
            "train_fraction": train_fraction, "candidates": list(ds.candidates),
            "router_options": options, "timings": timings, "wall_s": time.perf_counter() - started,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            **environment(), "dataset_rows": len(ds), "labels": _label_rules(options),
            "truncation": truncation(ds, options)}
    write_outputs(report, comparisons, meta, out_dir, routers)
    if export is not None:
        export = Path(export)
        export.parent.mkdir(parents=True, exist_ok=True)
        for name, suffix in (("report.json", ".json"), ("report.md", ".md"), ("mu_n.png", ".png"),
                             ("curves.png", "_curves.png")):
            if (out_dir / name).is_file():
                shutil.copyfile(out_dir / name, export.with_name(export.name + suffix))
    return report, meta


def _train_share(ds: RoutingDataset, fold: Fold, fraction: float, seed: int) -> Fold:
    """``fold`` with ``fraction`` of its training rows, drawn per source (at least one each)."""
    if fraction >= 1.0:
        return fold
    rng = np.random.default_rng(seed)
    source = ds.queries["source"].to_numpy()[fold.train]
    rows = [rng.permutation(fold.train[source == s])[:max(1, round(fraction * (source == s).sum()))]
            for s in dict.fromkeys(source)]
    return Fold(fold.name, np.sort(np.concatenate(rows)), fold.test)


def _fold_decisions(ds: RoutingDataset, router: str, options: dict, fold, folder: Path, timing: dict,
                    key: str, log) -> Decisions:
    """One (router, seed, fold): reused from ``folder`` when finished, else trained and saved."""
    path = folder / f"{fold.name}.jsonl"
    timing_path = path.with_suffix(".timing.json")
    if path.is_file():
        log(f"{router} {key}: reusing {path}")
        fold_t = {**json.loads(timing_path.read_text()), "reused": True} if timing_path.is_file() else None
        part = Decisions.load(path)
    else:
        log(f"{router} {key}: fit on {len(fold.train)} rows, score {len(fold.test)}")
        train, test = ds.subset(fold.train), ds.subset(fold.test)
        r = make_router(router, **options)
        t0 = time.perf_counter()
        r.fit(train)
        t1 = time.perf_counter()
        s = r.score_rows(test)
        t2 = time.perf_counter()
        part = Decisions(router, test.ids, [r.candidates[i] for i in s.argmax(1)],
                         [dict(zip(r.candidates, map(float, row))) for row in s])
        part.save(path)
        fold_t = {"fit_s": t1 - t0, "score_s": t2 - t1, "test_rows": len(fold.test)}
        result = getattr(r, "train_result", None)
        if result is not None:   # the validation curve: average μn (%) against step
            fold_t.update(best_step=result.best_step, steps=result.steps, stopped_early=result.stopped_early,
                          train_precision=result.precision,
                          curve=[[h["step"], round(100 * h["val_utility"], 2)] for h in result.history])
        timing_path.write_text(json.dumps(fold_t) + "\n")
    if fold_t is not None:
        timing["folds"][key] = fold_t
        timing["fit_s"] += fold_t["fit_s"]
        timing["score_s"] += fold_t["score_s"]
    return part


def headline_pairs(report: Report, routers: Sequence[str]) -> list[tuple[str, str]]:
    """Lookahead-MLM against every other row of the run (``task-best`` included); Lookahead-CLM
    against the best query-only baseline, ``linear``, ``domain`` and ``task-best``; each against
    its own w/o-RM row; the first-m ceiling against the MLM's w/o-RM row; the full-response ceiling
    against ``linear`` (a router reading the real responses should beat one reading the prompt)."""
    baselines = [b for b in (*BASELINES, *DEPLOYABLE) if b in routers]
    best = max(baselines, key=report.avg_mu_n) if baselines else None
    pairs = []
    for la in ("lookahead-mlm", "lookahead-clm"):
        if la not in routers:
            continue
        if la == "lookahead-mlm":
            others = [r for r in routers if r not in (la, f"{la}-norm")]
        else:
            others = list(dict.fromkeys([best, *[d for d in DEPLOYABLE if d in routers]] if best else []))
        pairs += [(la, b) for b in others] + [(la, TASK_BEST)]
        if f"{la}-norm" in routers:
            pairs.append((la, f"{la}-norm"))
    if "ceiling-first-m" in routers and "lookahead-mlm-norm" in routers:
        pairs.append(("ceiling-first-m", "lookahead-mlm-norm"))
    if "ceiling-full" in routers and "linear" in routers:
        pairs.append(("ceiling-full", "linear"))
    return list(dict.fromkeys(pairs))


def truncation(ds: RoutingDataset, options: dict) -> list[dict]:
    """How many prompts each (backbone, prompt length) of the run's neural routers cuts (keeping
    their start), so that no report cuts prompts silently."""
    from lookahead_router.routers.backbones import load_tokenizer, max_positions
    groups: dict[tuple, list[str]] = {}
    for name, opts in options.items():
        r = make_router(name, **opts)
        if r.neural:
            key = (r.backbone, r.kind, min(r.config.max_length, max_positions(r.backbone, r.kind)))
            groups.setdefault(key, []).append(name)
    prompts = ds.queries["prompt"].tolist()
    out = []
    for (backbone, kind, length), names in groups.items():
        lengths = np.array([len(ids) for ids in load_tokenizer(backbone, kind)(prompts)["input_ids"]])
        out.append({"backbone": backbone, "max_length": length, "cut": int((lengths > length).sum()),
                    "prompts": len(prompts), "routers": names})
    return out


def _label_rules(options: dict) -> dict:
    from lookahead_router.routers.config import NeuralConfig
    default = NeuralConfig.labels
    return {r: o.get("labels", default) for r, o in options.items() if ROUTERS[r].cls.neural}


def _check_settings(folder: Path, settings: dict) -> None:
    """Finished folds are reused only by a run with the same settings."""
    path = folder / "settings.json"
    if path.is_file():
        saved, now = json.loads(path.read_text()), json.loads(json.dumps(settings))
        if saved != now:
            differ = "; ".join(f"{k}: {saved.get(k, 'unset')!r} there, {now.get(k, 'unset')!r} now"
                               for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k))
            raise LookaheadError(f"{folder} holds decisions made with other settings ({path}: {differ}); "
                             "choose another --out or delete that folder")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2) + "\n")


def write_outputs(report: Report, comparisons: list[Comparison], meta: dict, out_dir: Path,
                  routers: list[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {**report.to_dict(), "comparisons": [c.to_dict() for c in comparisons], "run": meta}
    (out_dir / "report.json").write_text(json.dumps(payload, indent=2) + "\n")
    rules = sorted(set(meta["labels"].values()))
    lines = [f"# Benchmark: preset `{meta['preset']}`, protocol `{meta['protocol']}`, seeds "
             f"{', '.join(map(str, meta['seeds']))}", "", report.to_markdown(), "",
             f"- `{TASK_BEST}`: per benchmark, the candidate with the best mean normalised score on the "
             "training fold; it uses the benchmark label, which no router sees",
             "- `ceiling-*`: response-aware references that read each candidate's actual response at "
             "test time (not deployable)",
             f"- labels: {', '.join(rules) or '–'} (data/labels.py)",
             *[f"- prompts cut at {t['max_length']} tokens of {t['backbone']} (keeping the start): {t['cut']} of "
               f"{t['prompts']} ({', '.join(t['routers'])})" for t in meta["truncation"]],
             f"- preset: {meta['preset_description']}",
             f"- device: {meta['device']}; precision {meta['precision']} ({meta['precision_setting']}; CPU "
             f"flags {' '.join(meta['cpu_flags']) or 'none'}); wall time {meta['wall_s'] / 60:.1f} min; "
             f"peak memory {meta['peak_rss_mib']:.0f} MiB", "", "## Paired comparisons", "",
             comparisons_markdown(comparisons, report.benchmarks, len(meta["seeds"])), "",
             "## Training", "", training_markdown(meta["timings"]), ""]
    (out_dir / "report.md").write_text("\n".join(lines))
    plot_mu_n(report, [TASK_BEST, *routers], out_dir / "mu_n.png")
    plot_curves(meta["timings"], out_dir / "curves.png")


def training_markdown(timings: dict) -> str:
    """Per router: fit time per fold, and for the neural routers the steps trained, the step kept
    and how often early stopping ended training (from the folds' timing records)."""
    lines = ["| router | fit s / fold | score s / fold | steps | best step | stopped early | trained in |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for router, t in timings.items():
        folds = list(t["folds"].values())
        if not folds:
            continue
        neural = [f for f in folds if "steps" in f]
        mean = lambda key: f"{np.mean([f[key] for f in neural]):.0f}" if neural else "–"  # noqa: E731
        early = f"{sum(f.get('stopped_early', False) for f in neural)} of {len(neural)}" if neural else "–"
        trained = ", ".join(sorted({f.get("train_precision", "–") for f in neural})) or "–"
        lines.append(f"| {router} | {np.mean([f['fit_s'] for f in folds]):.0f} | "
                     f"{np.mean([f['score_s'] for f in folds]):.1f} | {mean('steps')} | {mean('best_step')} | "
                     f"{early} | {trained} |")
    return "\n".join(lines) + "\n\n- validation curves (average μn on each fold's validation split against step): curves.png"


def plot_curves(timings: dict, path: Path) -> None:
    """One panel per neural router: each (seed, fold)'s validation average μn against step, the
    kept step marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    routers = [r for r, t in timings.items() if any(f.get("curve") for f in t["folds"].values())]
    if not routers:
        return
    cols = min(4, len(routers))
    rows = -(-len(routers) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, router in zip(axes.flat, routers):
        for key, fold in timings[router]["folds"].items():
            if fold.get("curve"):
                steps, values = zip(*fold["curve"])
                line, = ax.plot(steps, values, linewidth=0.8, label=key)
                best = steps.index(fold["best_step"]) if fold["best_step"] in steps else None
                if best is not None:
                    ax.plot(steps[best], values[best], "o", color=line.get_color(), markersize=3)
        ax.set_title(router, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("validation avg μn")
    for ax in list(axes.flat)[len(routers):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_mu_n(report: Report, rows: list[str], path: Path) -> None:
    """Grouped bars: μn per benchmark (and the average) per row, with the seeds' standard deviation."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cols = report.benchmarks + ["Avg"]
    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(min(18, 4 + 1.5 * len(cols)), 5.5))
    for i, row in enumerate(rows):
        vals = [report.rows[row][b]["mu_n"] for b in report.benchmarks] + [report.avg_mu_n(row)]
        errs = [report.rows[row][b].get("mu_n_std", 0.0) for b in report.benchmarks] + [report.avg_std.get(row, 0.0)]
        ax.bar(np.arange(len(cols)) + i * width, vals, width, yerr=errs if report.seeds > 1 else None,
               label=row, error_kw={"linewidth": 0.6})
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(cols)) + width * (len(rows) - 1) / 2, cols, rotation=20)
    ax.set_ylabel("μn (% of Random→Oracle gap)")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
