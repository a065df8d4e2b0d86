"""A development dataset for choosing hyper-parameters without touching any test fold.

It keeps the *training* rows of one outer cv5 fold (by default seed 0, fold 0: its test rows are
dropped and never seen) and re-splits them: ``--dev`` of each benchmark's rows become the
dataset's "test" rows, the other benchmark rows and the training-only sources (SelfOSS) its
"train" rows. Routers are then compared on it with the ordinary benchmark, e.g.

    .venv/bin/python bench/dev_split.py --data runs/paper.parquet --out runs/dev.parquet
    .venv/bin/lookahead benchmark --data runs/dev.parquet --protocol split --preset cpu \
        --seeds 0,1,2 --routers mlc-mlm,lookahead-mlm-norm,lookahead-mlm --out runs/dev-bench

or, with ``--dev 1.0`` and ``--protocol cv5``, nested cross-validation inside the outer training fold:
every dev query gets an out-of-fold decision, and SelfOSS joins every inner training fold as it
joins the outer ones.
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="runs/paper.parquet")
    parser.add_argument("--out", default="runs/dev.parquet")
    parser.add_argument("--outer-seed", type=int, default=0, help="the cv5 fold assignment whose test fold is left out")
    parser.add_argument("--outer-fold", type=int, default=0)
    parser.add_argument("--dev", type=float, default=0.3, help="share of each benchmark's rows held out for comparison")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()

    from lookahead_router.data.dataset import RoutingDataset
    from lookahead_router.data.splits import make_folds

    ds = RoutingDataset.load(args.data)
    fold = make_folds(ds, "cv", k=5, seed=args.outer_seed, add_train=True)[args.outer_fold]
    dev = ds.subset(np.sort(fold.train))
    split = dev.queries["split"].to_numpy().astype(object)
    source = dev.queries["source"].to_numpy()
    rng = np.random.default_rng(args.seed)
    benchmark_rows = split == "test"
    new_split = np.where(benchmark_rows, "train", split)
    for s in np.unique(source[benchmark_rows]):
        rows = rng.permutation(np.flatnonzero(benchmark_rows & (source == s)))
        new_split[rows[:round(args.dev * len(rows))]] = "test"
    dev.queries["split"] = new_split
    dev.save(args.out)
    counts = {s: int(((source == s) & (new_split == "test")).sum()) for s in np.unique(source)}
    print(f"{args.out}: {len(dev)} rows (outer seed {args.outer_seed} fold {args.outer_fold}'s "
          f"{len(fold.test)} test rows left out); dev rows per benchmark: {counts}")


if __name__ == "__main__":
    main()
