"""One router on the development split, for choosing hyper-parameters without a test fold.

Trains ROUTER with the `cpu` preset's options plus OPTIONS (JSON) and SEED on the training rows of
runs/dev.parquet (bench/dev_split.py: the training rows of cv5 seed 0 fold 0, re-split) and scores
its dev rows; appends one JSON line to bench/results/dev_probes.jsonl: the dev average μn (on
normalised scores, ``data/labels.average_mu_n``), fit seconds, and for neural routers the
validation curve and the step kept.

    .venv/bin/python bench/dev_split.py --out runs/dev.parquet
    .venv/bin/python bench/dev_probe.py mlc-mlm '{"balance": "none"}' 0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("router")
    parser.add_argument("options", nargs="?", default="{}", help="JSON object of options over the preset's")
    parser.add_argument("seed", nargs="?", type=int, default=0)
    parser.add_argument("--dev", default="runs/dev.parquet")
    parser.add_argument("--out", default=str(HERE / "results" / "dev_probes.jsonl"))
    args = parser.parse_args()
    from lookahead_router.data.dataset import RoutingDataset
    from lookahead_router.data.labels import average_mu_n
    from lookahead_router.data.splits import make_folds
    from lookahead_router.evaluation.presets import load_preset
    from lookahead_router.precision import environment
    from lookahead_router.routers import make_router
    ds = RoutingDataset.load(args.dev)
    fold = make_folds(ds, "split", add_train=True)[0]
    extra = json.loads(args.options)
    router = make_router(args.router, **{**load_preset("cpu").options(args.router), **extra,
                                         "progress": False, "seed": args.seed})
    start = time.perf_counter()
    router.fit(ds.subset(fold.train))
    fit_s = time.perf_counter() - start
    test = ds.subset(fold.test)
    row = {"router": args.router, "options": extra, "seed": args.seed,
           "dev_avg_mu_n": round(average_mu_n(test, router.score_rows(test)), 2), "fit_s": round(fit_s),
           "precision": environment()["precision"]}
    result = getattr(router, "train_result", None)
    if result is not None:
        row.update(best_step=result.best_step, steps=result.steps, trained_in=result.precision,
                   curve=[[h["step"], round(100 * h["val_utility"], 1)] for h in result.history])
    else:
        row["chosen"] = getattr(router, "chosen", None)
    with open(args.out, "a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
