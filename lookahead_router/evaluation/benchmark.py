"""`lookahead benchmark`: train every router under one protocol, evaluate all in one report.

For each fold of the protocol, each router is built with the preset's options, fitted on the
training fold (its checkpoints chosen on a validation split carved from that fold) and asked to
score the test fold. The out-of-fold decisions of every router are then scored beside the reference
rows (candidates, Random, Oracle) with each benchmark's native metric.

Finished (router, fold) decisions are kept under ``OUT/decisions/``: re-running the same command
after an interruption skips them.
"""

from __future__ import annotations

import json
import platform
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.data.splits import ProtocolError, make_folds
from lookahead_router.evaluation.decisions import Decisions
from lookahead_router.evaluation.report import Report, evaluate
from lookahead_router.routers.base import ROUTERS, RouterError, make_router

BASELINES = ("knn", "kmeans", "smoothie", "mlc-clm", "zooter-clm", "routerdc-clm",
             "mlc-mlm", "zooter-mlm", "routerdc-mlm")
LOOKAHEAD = ("lookahead-clm-norm", "lookahead-clm", "lookahead-mlm-norm", "lookahead-mlm")
MLM_ABLATIONS = ("lookahead-mlm-start", "lookahead-mlm-random", "lookahead-mlm-nocm",
                 "lookahead-mlm-separate")


@dataclass(frozen=True)
class Preset:
    """Router options per group: "knn", "kmeans", "smoothie", "mlm" (encoder classifiers), "clm"
    (causal-LM classifiers), "lookahead-mlm" and "lookahead-clm" (each with its ablations).
    ``per_source`` subsamples each source (smoke runs only)."""
    name: str
    description: str
    groups: dict[str, dict]
    per_source: int | None = None

    def group(self, router: str) -> str:
        """"knn" -> knn, "mlc-mlm" -> mlm, "lookahead-mlm-start" -> lookahead-mlm."""
        return next((g for g in self.groups if router == g or router.startswith(g + "-")),
                    router.rsplit("-", 1)[-1])

    def options(self, router: str) -> dict:
        return dict(self.groups.get(self.group(router), {}))


def _preset(name, description, similarity, neighbours, mlm, clm, lookahead_mlm, lookahead_clm,
            per_source=None) -> Preset:
    knn = {**similarity, "k": neighbours["k"]}
    return Preset(name, description, {"knn": knn, "kmeans": {**knn, "seed": 0},
                                      "smoothie": {**similarity, "n0": neighbours["n0"],
                                                   "response_max_length": neighbours["response_max_length"]},
                                      "mlm": mlm, "clm": clm, "lookahead-mlm": lookahead_mlm,
                                      "lookahead-clm": lookahead_clm}, per_source)


_HEADS = dict(finetune=False, lr=1e-3, batch_size=64, epochs=10, eval_every=50, hidden=256)
# Lookahead on a 2-core CPU: frozen backbone (prompt token states cached) under a 1-layer, 128-wide
# transformer that runs the MID blocks; 16 response tokens per candidate; one epoch (about 100 s
# per fold: the 4 main rows and 4 ablations x 5 folds fit in about 70 minutes).
_LOOKAHEAD_CPU = dict(finetune=False, width=128, layers=1, heads=4, vocab_size=2048, lr=1e-3, batch_size=64,
                      epochs=1, eval_every=50, hidden=256)
PRESETS = {p.name: p for p in [
    # smoke fine-tunes the encoder and freezes the causal LM, so both training paths run
    _preset("smoke", "tiny random-initialised backbones, 24 rows per source: checks the plumbing",
            dict(backbone="tiny-bert", max_length=64), dict(k=10, n0=50, response_max_length=64),
            mlm=dict(backbone="tiny-bert", max_length=64, finetune=True, lr=1e-3, batch_size=8, epochs=1,
                     eval_every=5, hidden=32),
            clm=dict(backbone="tiny-llama", max_length=64, finetune=False, lr=1e-3, batch_size=8, epochs=2,
                     eval_every=5, hidden=32),
            lookahead_mlm=dict(backbone="tiny-bert", max_length=64, finetune=True, m=8, lr=1e-3,
                               batch_size=8, epochs=1, eval_every=5, hidden=32),
            lookahead_clm=dict(backbone="tiny-llama", max_length=64, finetune=False, response_length=8,
                               width=32, heads=2, vocab_size=256, lr=1e-3, batch_size=8, epochs=1,
                               eval_every=5, hidden=32),
            per_source=24),
    _preset("cpu", "packaged backbones (MiniLM, SmolLM2) frozen with cached bf16 features; classifier "
                   "heads trained (lr 1e-3, 10 epochs, batch 64, best of every 50 steps on validation)",
            dict(backbone="minilm", max_length=256), dict(k=100, n0=1000, response_max_length=128),
            mlm=dict(backbone="minilm", max_length=256, **_HEADS),
            clm=dict(backbone="smollm2", max_length=128, **_HEADS),
            lookahead_mlm=dict(backbone="minilm", max_length=128, m=16, **_LOOKAHEAD_CPU),
            lookahead_clm=dict(backbone="smollm2", max_length=128, response_length=16, **_LOOKAHEAD_CPU)),
    _preset("gpu", "the paper's settings (Appendix C.5): full fine-tuning, max length 2048, batch 64, "
                   "lr 5e-5, cosine schedule, 2 (causal) / 4 (encoder) epochs, checkpoint every 100 steps",
            dict(backbone="minilm", max_length=512), dict(k=100, n0=1000, response_max_length=512),
            mlm=dict(backbone="minilm", max_length=2048, finetune=True, lr=5e-5, batch_size=64, epochs=4,
                     eval_every=100),
            clm=dict(backbone="smollm2", max_length=2048, finetune=True, lr=5e-5, batch_size=64, epochs=2,
                     eval_every=100),
            # Lookahead: m = 64, lambda = 0.2 / 0.5, alpha = 0.4 are the routers' own defaults
            lookahead_mlm=dict(backbone="minilm", max_length=2048, finetune=True, lr=5e-5, batch_size=64,
                               epochs=4, eval_every=100),
            lookahead_clm=dict(backbone="smollm2", max_length=1024, response_length=1024, finetune=True,
                               lr=5e-5, batch_size=8, grad_accum=8, epochs=2, eval_every=100)),
]}
PROTOCOLS = {"cv5": ("cv", 5), "lobo": ("lobo", 0), "split": ("split", 0)}


def subsample(ds: RoutingDataset, per_source: int, seed: int = 0) -> RoutingDataset:
    rng = np.random.default_rng(seed)
    source = ds.queries["source"].to_numpy()
    rows = [rng.permutation(np.flatnonzero(source == s))[:per_source] for s in ds.sources]
    return ds.subset(np.sort(np.concatenate(rows)))


def run_benchmark(ds: RoutingDataset, routers: Sequence[str] = (*BASELINES, *LOOKAHEAD),
                  protocol: str = "cv5", preset: str | Preset = "cpu", out_dir: str | Path = "runs/benchmark", seed: int = 0,
                  add_train: bool = True, overrides: dict | None = None, progress: bool = True,
                  log=print) -> tuple[Report, dict]:
    """Train and evaluate ``routers``; write report.json, report.md and mu_n.png to ``out_dir``."""
    preset = PRESETS[preset] if isinstance(preset, str) else preset
    unknown = [r for r in routers if r not in _registered()]
    if unknown:
        raise RouterError(f"unknown router(s) {unknown}; known routers: {', '.join(sorted(_registered()))}")
    if protocol not in PROTOCOLS:
        raise ProtocolError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    if len(ds.candidates) < 2:
        raise RouterError(f"routing needs at least two candidates; the dataset has {ds.candidates}")
    if preset.per_source:
        ds = subsample(ds, preset.per_source, seed)
    kind, k = PROTOCOLS[protocol]
    folds = make_folds(ds, kind, k=k, seed=seed, add_train=add_train)
    for f in folds:
        if not len(f.train) or not len(f.test):
            raise ProtocolError(f"fold {f.name} has {len(f.train)} training and {len(f.test)} test rows")
    out_dir = Path(out_dir)
    started = time.perf_counter()
    timings: dict[str, dict] = {}
    decisions, used_options = [], {}
    for router in routers:
        used_options[router] = {**preset.options(router), **(overrides or {}).get(router, {})}
        options = {**used_options[router], "progress": progress}
        ids, models, scores = [], [], []
        timings[router] = {"fit_s": 0.0, "score_s": 0.0, "folds": {}}
        _check_settings(out_dir / "decisions" / router, {
            "options": used_options[router], "protocol": protocol,
            "seed": seed, "add_train": add_train, "preset": preset.name, "rows": len(ds)})
        for fold in folds:
            path = out_dir / "decisions" / router / f"{fold.name}.jsonl"
            timing_path = path.with_suffix(".timing.json")
            if path.is_file():
                part = Decisions.load(path)
                log(f"{router} {fold.name}: reusing {path}")
                if timing_path.is_file():
                    fold_t = json.loads(timing_path.read_text())
                    fold_t["reused"] = True
                    _add_timing(timings[router], fold.name, fold_t)
            else:
                log(f"{router} {fold.name}: fit on {len(fold.train)} rows, score {len(fold.test)}")
                train, test = ds.subset(fold.train), ds.subset(fold.test)
                r = make_router(router, **options)
                t0 = time.perf_counter()
                r.fit(train)
                t1 = time.perf_counter()
                s = r.score(test.queries["prompt"].tolist())
                t2 = time.perf_counter()
                part = Decisions(router, test.ids, [r.candidates[i] for i in s.argmax(1)],
                                 [dict(zip(r.candidates, map(float, row))) for row in s])
                part.save(path)
                fold_t = {"fit_s": t1 - t0, "score_s": t2 - t1, "test_rows": len(fold.test)}
                if getattr(r, "train_result", None) is not None:
                    fold_t["best_step"] = r.train_result.best_step
                    fold_t["steps"] = r.train_result.steps
                timing_path.write_text(json.dumps(fold_t) + "\n")
                _add_timing(timings[router], fold.name, fold_t)
            ids += part.ids
            models += part.models
            scores += part.scores
        decisions.append(Decisions(router, ids, models, scores))
    report = evaluate(ds, decisions=decisions, progress=progress)
    meta = {"preset": preset.name, "preset_description": preset.description, "protocol": protocol,
            "add_train": add_train, "seed": seed, "folds": [f.name for f in folds],
            "router_options": used_options,
            "timings": timings, "wall_s": time.perf_counter() - started,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "device": _device(), "dataset_rows": len(ds)}
    write_outputs(report, meta, out_dir, list(routers))
    return report, meta


def _add_timing(total: dict, fold: str, fold_t: dict) -> None:
    total["folds"][fold] = fold_t
    total["fit_s"] += fold_t["fit_s"]
    total["score_s"] += fold_t["score_s"]


def _check_settings(folder: Path, settings: dict) -> None:
    """Finished folds are reused only by a run with the same settings."""
    path = folder / "settings.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved != json.loads(json.dumps(settings)):
            raise ValueError(f"{folder} holds decisions made with other settings ({path}); "
                             "choose another --out or delete that folder")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2) + "\n")


def _registered() -> set[str]:
    import lookahead_router.routers  # noqa: F401
    return set(ROUTERS)


def _device() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def write_outputs(report: Report, meta: dict, out_dir: Path, routers: list[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps({**report.to_dict(), "run": meta}, indent=2) + "\n")
    lines = [f"# Benchmark: preset `{meta['preset']}`, protocol `{meta['protocol']}`", "",
             report.to_markdown(), "",
             f"- preset: {meta['preset_description']}",
             f"- device: {meta['device']}; wall time {meta['wall_s'] / 60:.1f} min; "
             f"peak memory {meta['peak_rss_mib']:.0f} MiB", ""]
    (out_dir / "report.md").write_text("\n".join(lines))
    plot_mu_n(report, routers, out_dir / "mu_n.png")


def plot_mu_n(report: Report, rows: list[str], path: Path) -> None:
    """Grouped bars: μn per benchmark (and the average) for every trained router."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cols = report.benchmarks + ["Avg"]
    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(min(16, 4 + 1.2 * len(cols)), 5))
    for i, row in enumerate(rows):
        vals = [report.rows[row][b]["mu_n"] for b in report.benchmarks] + [report.avg_mu_n(row)]
        ax.bar(np.arange(len(cols)) + i * width, vals, width, label=row)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(cols)) + width * (len(rows) - 1) / 2, cols, rotation=20)
    ax.set_ylabel("μn (% of Random→Oracle gap)")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

