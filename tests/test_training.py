"""The training engine and the classifier baselines (MLC, ZOOTER, RouterDC) on tiny models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.routers.base import Router, RouterError
from lookahead_router.routers.registry import make_router
from lookahead_router.routers.neural import RowDataset
from lookahead_router.training.engine import TrainConfig, train, validate

CANDS = ["A", "B", "C"]
TINY = {"mlm": "tiny-bert", "clm": "tiny-llama"}
FAST = dict(epochs=3, batch_size=8, eval_every=4, lr=3e-3, max_length=32, hidden=16, progress=False)


def topic_dataset(n: int = 40, seed: int = 0) -> RoutingDataset:
    """Maths prompts are answered well by A only, code prompts by C only."""
    rng = np.random.default_rng(seed)
    prompts, scores = [], []
    for i in range(n):
        if i % 2 == 0:
            prompts.append(f"solve the equation {rng.integers(100)} x + {i} = {rng.integers(100)}")
            scores.append([1.0, 0.0, 0.0])
        else:
            prompts.append(f"write a python function named f{i} that returns a sorted list")
            scores.append([0.0, 0.0, 1.0])
    queries = pd.DataFrame({"id": [f"s/{i}" for i in range(n)], "source": "s", "split": "train",
                            "prompt": prompts, "turns": [[p] for p in prompts], "payload": [{}] * n})
    responses = np.array([[f"{c} answer {i}" for c in CANDS] for i in range(n)], dtype=object)
    return RoutingDataset(CANDS, queries, responses, np.array(scores))


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 3)

    def forward(self, batch):
        logits = self.layer(batch["features"])
        return {"logits": logits, "loss": torch.nn.functional.cross_entropy(logits, batch["target"])}


def _linear_data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    target = x[:, :3].argmax(1)
    utility = np.eye(3, dtype=np.float32)[target]
    return RowDataset({"features": x, "target": target, "utility": utility})


def _collate(rows):
    return {k: torch.as_tensor(np.stack([r[k] for r in rows])) for k in rows[0]}


def test_engine_learns_keeps_best_checkpoint_and_resumes(tmp_path):
    tr, va = _linear_data(256, 0), _linear_data(64, 1)
    torch.manual_seed(0)
    model = Linear()
    cfg = TrainConfig(lr=0.05, batch_size=32, epochs=1, eval_every=2, progress=False,
                      output_dir=str(tmp_path / "ckpt"))
    first = train(model, tr, va, _collate, cfg)
    assert first.steps == 8 and len(first.history) == 4
    # Resume: the second call continues from step 8 (the last checkpoint) to the end of epoch 3.
    cfg.epochs, cfg.resume = 3, True
    second = train(model, tr, va, _collate, cfg)
    assert second.steps == 24
    assert [h["step"] for h in second.history] == list(range(2, 25, 2))
    assert second.best_metric > 0.8  # chance is 1/3: the linear rule is learnt
    # On return the model holds the best step's weights, not the last ones.
    from accelerate import Accelerator
    loader = torch.utils.data.DataLoader(va, batch_size=32, collate_fn=_collate)
    assert validate(model, loader, Accelerator(cpu=True))[0] == pytest.approx(second.best_metric)


def test_engine_rejects_empty_sets():
    with pytest.raises(ValueError, match="training set is empty"):
        train(Linear(), _linear_data(0, 0), _linear_data(4, 1), _collate, TrainConfig(progress=False))
    with pytest.raises(ValueError, match="validation set is empty"):
        train(Linear(), _linear_data(8, 0), _linear_data(0, 1), _collate, TrainConfig(progress=False))


@pytest.mark.parametrize("family", ["mlc", "zooter", "routerdc"])
@pytest.mark.parametrize("backbone", ["mlm", "clm"])
@pytest.mark.parametrize("finetune", [False, True])
def test_classifiers_fit_score_and_round_trip(tmp_path, family, backbone, finetune):
    ds = topic_dataset()
    router = make_router(f"{family}-{backbone}", backbone=TINY[backbone], finetune=finetune, **FAST)
    router.fit(ds)
    prompts = ["solve the equation 3 x + 1 = 7", "write a python function that sorts"]
    scores = router.score(prompts)
    assert scores.shape == (2, 3) and ((scores >= 0) & (scores <= 1)).all()
    if family != "mlc":
        np.testing.assert_allclose(scores.sum(1), 1.0, rtol=1e-5)
    router.save(tmp_path / "r")
    loaded = Router.load(tmp_path / "r")
    assert loaded.name == router.name and loaded.candidates == CANDS
    np.testing.assert_array_equal(loaded.score(prompts), scores)
    assert [d.model for d in router.route(prompts)] == [d.model for d in loaded.route(prompts)]


@pytest.mark.parametrize("family", ["mlc", "zooter", "routerdc"])
def test_classifier_heads_learn_the_topic_rule(family):
    """On the packaged MiniLM, frozen features + a trained head send maths to A and code to C."""
    train_ds, held = topic_dataset(60, seed=0), topic_dataset(10, seed=1)
    router = make_router(f"{family}-mlm", backbone="minilm", finetune=False,
                         **{**FAST, "epochs": 30, "lr": 1e-2, "max_length": 64})
    router.fit(train_ds)
    routed = [d.model for d in router.route(held.queries["prompt"].tolist())]
    expected = ["A" if i % 2 == 0 else "C" for i in range(10)]
    assert routed == expected


def test_bad_input_is_a_clear_error():
    ds = topic_dataset()
    with pytest.raises(RouterError, match="nope: no such router; routers: .*knn"):
        make_router("nope")
    with pytest.raises(RouterError, match="at least two candidates"):
        make_router("mlc-mlm", backbone="tiny-bert", **FAST).fit(ds.select_candidates(["A"]))
    with pytest.raises(RouterError, match="empty dataset"):
        make_router("knn", backbone="tiny-bert").fit(ds.subset([]))
    with pytest.raises(RouterError, match="unknown option"):
        make_router("mlc-mlm", learning_rate=1)
    with pytest.raises(RouterError, match="not fitted"):
        make_router("mlc-mlm").score(["x"])


@pytest.mark.parametrize("backbone", ["mlm", "clm"])
def test_prompts_longer_than_the_backbone_limit_are_truncated(backbone):
    """A prompt far beyond the backbone's position limit (512 for BERT) is truncated, keeping its
    start; asking for a longer max_length is capped at the limit rather than crashing."""
    router = make_router(f"mlc-{backbone}", backbone=TINY[backbone], finetune=True,
                         **{**FAST, "max_length": 100_000, "epochs": 1})
    router.fit(topic_dataset(16))
    long_prompt = "solve the equation " + "x + 1 = 2 and " * 3000
    scores = router.score([long_prompt, long_prompt + " plus a different ending"])
    assert scores.shape == (2, 3)
    np.testing.assert_allclose(scores[0], scores[1], rtol=1e-6)  # the tail beyond the limit is cut


class Peaks(torch.nn.Module):
    """Picks the good candidate (0) only while its training-step counter is 3 or 4: the
    validation metric peaks at step 4 (evaluated every 2 steps), then falls back."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    def forward(self, batch):
        if self.training:
            self.seen += 1
        good = 3 <= int(self.seen) <= 4
        logits = torch.tensor([[1.0, 0.0] if good else [0.0, 1.0]]).expand(len(batch["features"]), 2)
        return {"logits": logits + 0 * self.w, "loss": (self.w ** 2).sum() + 1.0}


def test_early_stopping_keeps_the_best_validation_step_and_stops_after_patience():
    def data(n):
        return RowDataset({"features": np.zeros((n, 1), np.float32),
                           "utility": np.tile(np.array([1.0, 0.0], np.float32), (n, 1))})
    config = TrainConfig(batch_size=4, epochs=10, eval_every=2, patience=2, progress=False, lr=1e-3)
    model = Peaks()
    result = train(model, data(4), data(4), _collate, config)   # one batch per epoch: 10 steps at most
    assert result.best_step == 4 and result.best_metric == 1.0
    assert result.stopped_early and result.steps == 8           # validations at 6 and 8 were no better
    assert [h["step"] for h in result.history] == [2, 4, 6, 8]
    assert int(model.seen) == 4                                  # the best step's weights are back
    full = train(Peaks(), data(4), data(4), _collate, TrainConfig(batch_size=4, epochs=10, eval_every=2,
                                                                  progress=False, lr=1e-3))
    assert full.steps == 10 and not full.stopped_early and full.best_step == 4


def test_routing_loss_weights_rows_as_if_repeated():
    """balance=sources scales each row's loss: weight 2 on a row is that row counted twice."""
    from lookahead_router.routers.losses import routing_bce
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.3, 0.1, -2.0]])
    labels = torch.tensor([[1.0, 0.0, float("nan")], [0.0, 1.0, 1.0]])
    weighted = routing_bce(logits, {"labels": labels, "weight": torch.tensor([2.0, 1.0])})
    repeated = routing_bce(logits[[0, 0, 1]], {"labels": labels[[0, 0, 1]]})
    assert weighted.item() == pytest.approx(repeated.item())
    assert routing_bce(logits, {"labels": labels}).item() != pytest.approx(weighted.item())


def test_balance_sources_weights_the_training_rows():
    from lookahead_router.data.labels import balanced_weights
    ds = topic_dataset()
    columns = {}
    for balance in ("sources", "none"):
        router = make_router("mlc-mlm", backbone=TINY["mlm"], balance=balance, **FAST)
        router.candidates = CANDS
        router.plan = router._plan()
        columns[balance] = router._columns(ds)
    np.testing.assert_allclose(columns["sources"]["weight"], balanced_weights(ds), rtol=1e-6)
    assert "weight" not in columns["none"]
    with pytest.raises(RouterError, match="balance must be one of"):
        make_router("mlc-mlm", balance="yes")
