"""Does the full-response ceiling's input say more than the prompt? Ridge regressions of each
candidate's normalised score on the development split (bench/dev_split.py), on the features the
``ceiling-full`` router reads from its own cache (the ``cpu`` preset: MiniLM, prompts 256 tokens,
the first 128 tokens of each response): prompt alone, prompt ‖ response, and with their product,
unweighted and with ``balance=sources`` row weights; prints the dev average μn per ridge α.

    .venv/bin/python bench/ceiling_diagnosis.py
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", default="runs/dev.parquet")
    args = parser.parse_args()
    from sklearn.linear_model import Ridge

    from lookahead_router.data.dataset import RoutingDataset
    from lookahead_router.data.labels import average_mu_n, balanced_weights, normalised_scores
    from lookahead_router.data.splits import make_folds
    from lookahead_router.evaluation.presets import load_preset
    from lookahead_router.routers import make_router
    ds = RoutingDataset.load(args.dev)
    fold = make_folds(ds, "split", add_train=True)[0]
    train, dev = ds.subset(fold.train), ds.subset(fold.test)
    ceiling = make_router("ceiling-full", **{**load_preset("cpu").options("ceiling-full"), "progress": False})
    ceiling.candidates, ceiling.plan = list(ds.candidates), ceiling._plan()

    def features(d):
        return (np.stack(ceiling._queries(d.queries["prompt"].tolist())),
                ceiling._extra_columns(d)["response_emb"])

    (q_train, r_train), (q_dev, r_dev) = features(train), features(dev)
    target, weights = normalised_scores(train), balanced_weights(train)
    variants = {"prompt": lambda q, r: q,
                "prompt ‖ response": lambda q, r: np.concatenate([q, r], 1),
                "prompt ‖ response ‖ product": lambda q, r: np.concatenate([q, r, q * r], 1)}
    for name, make in variants.items():
        for weighted in (False, True):
            row = {}
            for alpha in (1.0, 10.0, 100.0):
                scores = np.zeros((len(dev), len(ds.candidates)))
                for t in range(len(ds.candidates)):
                    known = ~np.isnan(target[:, t])
                    model = Ridge(alpha=alpha).fit(make(q_train, r_train[:, t])[known], target[known, t],
                                                   sample_weight=weights[known] if weighted else None)
                    scores[:, t] = model.predict(make(q_dev, r_dev[:, t]))
                row[alpha] = round(average_mu_n(dev, scores), 1)
            print(f"{name:30s} {'source-weighted' if weighted else 'unweighted':16s} "
                  + "  ".join(f"α={a:g}: {v}" for a, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
