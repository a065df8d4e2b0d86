"""Training under bf16 autocast against fp32 on a CPU with native bf16: the speed of a training
step and whether the trained router routes alike.

Speed: seconds per optimizer step (batch 64, the `cpu` preset's options, the same cached features)
of MLC-MLM, Lookahead-MLM without and with response modelling, with autocast on and off, taking
turns. Agreement: MLC-MLM trained on the development split (bench/dev_split.py: the training rows
of cv5 seed 0 fold 0, never a test fold) with autocast on and off for each seed; the share of dev
prompts routed alike by the two, set beside the share routed alike by two fp32 seeds (the noise
a user already lives with), and each one's average μn on the dev rows.

    .venv/bin/python bench/dev_split.py --out runs/dev.parquet
    .venv/bin/python bench/training_precision.py [--dev runs/dev.parquet] [--seeds 0,1,2] [--steps 6]

Writes bench/results/training_precision_cpu.{json,md}. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from lookahead_router.precision import environment
from training_cost import seconds_per_step   # bench/ is the script's folder

HERE = Path(__file__).parent
ROUTERS = ("mlc-mlm", "lookahead-mlm-norm", "lookahead-mlm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", default="runs/dev.parquet")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", default="training_precision_cpu")
    args = parser.parse_args()
    from lookahead_router.data.dataset import RoutingDataset
    from lookahead_router.data.labels import average_mu_n
    from lookahead_router.data.splits import make_folds
    from lookahead_router.evaluation.presets import load_preset
    from lookahead_router.precision import BF16, resolve_precision
    from lookahead_router.routers.registry import make_router
    if resolve_precision() != BF16:
        raise SystemExit("the precision setting resolves to fp32 here: nothing to compare (needs native bf16)")
    preset = load_preset("cpu")
    dev = RoutingDataset.load(args.dev)
    rng = np.random.default_rng(0)
    sample = dev.subset(np.sort(rng.choice(len(dev), 64 * (args.steps + 1), replace=False)))
    speed = []
    for name in ROUTERS:
        t = {on: seconds_per_step(name, preset.options(name), sample, args.steps, autocast=on,
                                 curriculum_rows=len(sample), seed=0) for on in (False, True)}
        speed.append({"router": name, "fp32_s_per_step": t[False], "bf16_s_per_step": t[True],
                      "speed_up": t[False] / t[True]})
        print(speed[-1], flush=True)
    fold = make_folds(dev, "split", add_train=True)[0]
    train, test = dev.subset(fold.train), dev.subset(fold.test)
    seeds = [int(s) for s in args.seeds.split(",")]
    choices, fits = {}, []
    for seed in seeds:
        for bf16 in (False, True):
            router = make_router("mlc-mlm", **{**preset.options("mlc-mlm"), "seed": seed, "bf16": bf16,
                                               "progress": False})
            start = time.perf_counter()
            router.fit(train)
            scores = router.score_rows(test)
            choices[seed, bf16] = scores.argmax(1)
            fits.append({"seed": seed, "autocast": bf16, "fit_s": time.perf_counter() - start,
                         "dev_avg_mu_n": average_mu_n(test, scores), "trained_in": router.train_result.precision})
            print(fits[-1], flush=True)
    same = lambda a, b: float((choices[a] == choices[b]).mean() * 100)  # noqa: E731
    agreement = {"bf16_vs_fp32_same_seed": [same((s, False), (s, True)) for s in seeds],
                 "fp32_seed_vs_seed": [same((a, False), (b, False)) for a, b in zip(seeds, seeds[1:])]}
    meta = {**environment(), "batch_size": 64, "measured_steps": args.steps, "dev_rows": len(test)}
    out = HERE / "results"
    (out / f"{args.out}.json").write_text(json.dumps({"run": meta, "speed": speed, "fits": fits,
                                                      "agreement": agreement}, indent=2) + "\n")
    lines = [f"Training in bf16 autocast against fp32 ({meta['device']}; features in {meta['precision']}, "
             f"CPU flags {' '.join(meta['cpu_flags'])}; batch 64)", "",
             "| router | fp32 s / step | bf16 autocast s / step | speed-up |", "|---|---:|---:|---:|"]
    lines += [f"| {r['router']} | {r['fp32_s_per_step']:.3f} | {r['bf16_s_per_step']:.3f} | {r['speed_up']:.2f}x |"
              for r in speed]
    lines += ["", f"MLC-MLM trained on the development split, scored on its {len(test)} dev rows:", "",
              "| seed | training | fit s | dev avg μn |", "|---|---|---:|---:|"]
    lines += [f"| {f['seed']} | {f['trained_in']} | {f['fit_s']:.0f} | {f['dev_avg_mu_n']:.1f} |" for f in fits]
    lines += ["", "| routed alike (%) | per pair |", "|---|---|",
              f"| bf16 vs fp32, same seed | {', '.join(f'{x:.1f}' for x in agreement['bf16_vs_fp32_same_seed'])} |",
              f"| fp32, seed vs next seed | {', '.join(f'{x:.1f}' for x in agreement['fp32_seed_vs_seed'])} |"]
    (out / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
