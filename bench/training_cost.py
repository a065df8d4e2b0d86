"""What the `cpu` preset's realisation costs to train, for each choice of trainable part: seconds per
optimizer step (batch 64, the preset's prompt length and Lookahead options) of the query-only
classifier and of Lookahead with and without response modelling, with the backbone's top 1, 2 or
all of its layers trained over the cached states of the layers below (all layers: every layer of
MiniLM trains, over its cached embeddings). From them, the projected training time of one cv5
fold (one epoch over its ~10.8k rows) and of the whole quality run (15 cv5 folds + 7 lobo folds).

    .venv/bin/python bench/training_cost.py [--data runs/paper.parquet] [--layers 1,2,6] [--steps 6]

Writes bench/results/training_cost_cpu.json and .md. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from lookahead_router.precision import environment

HERE = Path(__file__).parent
ROUTERS = ("mlc-mlm", "lookahead-mlm-norm", "lookahead-mlm")
FOLD_ROWS = 10835          # a cv5 training fold with SelfOSS; 10% of it is carved for validation
QUALITY_FOLDS = 15 + 7     # cv5 x 3 seeds + lobo


def seconds_per_step(name: str, options: dict, ds, steps: int, autocast: bool = False,
                     curriculum_rows: int = FOLD_ROWS, seed: int | None = None) -> float:
    """Mean wall seconds of a training step (forward, backward, AdamW) over ``steps`` batches;
    ``autocast``: the forward under CPU bf16 autocast, as the engine trains where bf16 is native;
    ``curriculum_rows``: the training rows Lookahead's curriculum is laid over; ``seed``: the
    initialisation (None: the global generator as it stands)."""
    from lookahead_router.routers.registry import make_router
    from lookahead_router.routers.neural import RowDataset
    if seed is not None:
        torch.manual_seed(seed)
    router = make_router(name, **{**options, "progress": False})
    router.candidates = list(ds.candidates)
    router.plan = router._plan()
    router._split()
    rows = RowDataset(router._columns(ds))
    model = router.model = router._build()
    router._before_training(curriculum_rows)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    size = options["batch_size"]
    batches = [router._collate([rows[i] for i in range(s, s + size)]) for s in range(0, (steps + 1) * size, size)]
    times = []
    for batch in batches:                     # the first step warms up and is not counted
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return float(np.mean(times[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="runs/paper.parquet")
    parser.add_argument("--layers", default="1,2,6")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", default="training_cost_cpu")
    args = parser.parse_args()
    from lookahead_router.data.dataset import RoutingDataset
    from lookahead_router.evaluation.presets import load_preset
    preset = load_preset("cpu")
    full = RoutingDataset.load(args.data)
    rng = np.random.default_rng(0)
    ds = full.subset(np.sort(rng.choice(len(full), 64 * (args.steps + 1), replace=False)))
    steps_per_fold = int(np.ceil(0.9 * FOLD_ROWS / 64))
    rows = []
    for layers in [int(x) for x in args.layers.split(",")]:
        for name in ROUTERS:
            s = seconds_per_step(name, {**preset.options(name), "layers": layers}, ds, args.steps)
            rows.append({"router": name, "layers": layers, "s_per_step": s, "fold_epoch_s": s * steps_per_fold,
                         "quality_run_h": s * steps_per_fold * QUALITY_FOLDS / 3600})
            print(rows[-1], flush=True)
    meta = {**environment(), "batch_size": 64,
            "steps_per_fold_epoch": steps_per_fold, "measured_steps": args.steps}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{args.out}.json").write_text(json.dumps({"run": meta, "rows": rows}, indent=2) + "\n")
    lines = [f"Training cost of the `cpu` preset's routers by trainable layers ({meta['device']}; torch engine in "
             f"{meta['precision']}; batch 64; "
             f"{steps_per_fold} steps per cv5 fold and epoch)", "",
             "| router | trained layers | s / step | one fold, one epoch (s) | 22 folds of the quality run (h) |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['router']} | {r['layers']} | {r['s_per_step']:.2f} | {r['fold_epoch_s']:.0f} | "
              f"{r['quality_run_h']:.2f} |" for r in rows]
    (out / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
