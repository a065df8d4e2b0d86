"""The deployable reference routers (`linear`, `domain`), the metric-aligned weights
(`data/labels.source_weights`) and their use as the neural routers' validation metric."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.data.labels import average_mu_n, metric_utility, source_weights
from lookahead_router.routers.base import Router, RouterError
from lookahead_router.routers.registry import make_router

CANDS = ["A", "B", "C"]
FAST = dict(backbone="tiny-bert", max_length=32, progress=False)


def two_domains(n: int = 60, seed: int = 0) -> RoutingDataset:
    """Maths prompts (source "math"): A answers well, C badly; code prompts (source "code"): the
    reverse; B is middling everywhere, so B is the best candidate over all rows."""
    rng = np.random.default_rng(seed)
    prompts, sources, scores = [], [], []
    for i in range(n):
        if i % 2 == 0:
            prompts.append(f"solve the equation {rng.integers(100)} x + {i} = {rng.integers(100)}")
            sources.append("math")
            scores.append([1.0, 0.6, 0.0])
        else:
            prompts.append(f"write a python function named f{i} that returns a sorted list")
            sources.append("code")
            scores.append([0.0, 0.6, 1.0])
    queries = pd.DataFrame({"id": [f"{s}/{i}" for i, s in enumerate(sources)], "source": sources,
                            "split": "test", "prompt": prompts, "turns": [[p] for p in prompts],
                            "payload": [{}] * n, "team": ["x" if s == "math" else "y" for s in sources]})
    responses = np.array([[f"{c} answer {i}" for c in CANDS] for i in range(n)], dtype=object)
    return RoutingDataset(CANDS, queries, responses, np.array(scores))


PROBES = ["solve the equation 7 x + 3 = 12", "write a python function named g that returns a sorted list"]


@pytest.mark.parametrize("name", ["linear", "domain"])
def test_reference_routers_learn_the_known_answer_and_round_trip(tmp_path, name):
    router = make_router(name, **FAST).fit(two_domains())
    assert [d.model for d in router.route(PROBES)] == ["A", "C"]
    scores = router.score(PROBES)
    assert scores.shape == (2, 3) and ((scores >= 0) & (scores <= 1)).all()
    # the penalty and the weighting were chosen on validation, among the grid's values
    assert set(router.chosen) == {"balance", "alpha" if name == "linear" else "C"}
    assert len(router.validation) == 2 * len(router.grid)
    router.save(tmp_path / name)
    loaded = Router.load(tmp_path / name)
    np.testing.assert_array_equal(loaded.score(PROBES), scores)
    assert loaded.chosen == router.chosen


def test_domain_router_reads_a_given_column_and_falls_back_to_the_overall_best():
    ds = two_domains()
    router = make_router("domain", domain_column="team", **FAST).fit(ds)
    assert router.predict_domains(PROBES) == ["x", "y"]
    # a prediction less confident than min_confidence goes to the best candidate over all rows (B)
    cautious = make_router("domain", min_confidence=1.0, **FAST).fit(ds)
    assert [d.model for d in cautious.route(PROBES)] == ["B", "B"]
    assert cautious.predict_domains(PROBES) == [None, None]
    with pytest.raises(RouterError, match="no column 'topic'"):
        make_router("domain", domain_column="topic", **FAST).fit(ds)
    with pytest.raises(RouterError, match="balance"):
        make_router("linear", balance="by-source", **FAST)


def _weighted_sources() -> RoutingDataset:
    """Two benchmarks of different sizes and spreads, and a training-only source."""
    rng = np.random.default_rng(1)
    sizes = {"big": 40, "small": 5, "extra": 10}
    sources = [s for s, n in sizes.items() for _ in range(n)]
    n = len(sources)
    scores = rng.random((n, 3))
    scores[np.array(sources) == "small"] *= 0.3            # a narrow spread
    queries = pd.DataFrame({"id": [f"q{i}" for i in range(n)], "source": sources,
                            "split": ["train" if s == "extra" else "test" for s in sources],
                            "prompt": [f"p{i}" for i in range(n)], "turns": [[f"p{i}"] for i in range(n)],
                            "payload": [{}] * n})
    return RoutingDataset(CANDS, queries, np.full((n, 3), "r", dtype=object), scores)


def test_source_weights_sum_as_average_mu_n_weighs_sources():
    ds = _weighted_sources()
    w = source_weights(ds)
    source = ds.queries["source"].to_numpy()
    assert (w[source == "extra"] == 0).all()                # not reported: no weight
    for s in ("big", "small"):
        rows = source == s
        block = ds.scores[rows]
        gap = (block.max(1) - block.mean(1)).mean() / (block.max() - block.min())
        assert w[rows].sum() * gap == pytest.approx(0.5)      # each of S = 2 sources: 1 / S
    assert w[source == "small"][0] > 8 * w[source == "big"][0]   # few rows, narrow spread: heavy
    # average_mu_n is the mean over the reported sources of (chosen − random) / (oracle − random)
    choice_scores = np.random.default_rng(2).random((len(ds), 3))
    choice = choice_scores.argmax(1)
    expected = []
    for s in ("big", "small"):
        rows = source == s
        block = ds.scores[rows]
        chosen = block[np.arange(len(block)), choice[rows]].mean()
        expected.append((chosen - block.mean(1).mean()) / (block.max(1).mean() - block.mean(1).mean()) * 100)
    assert average_mu_n(ds, choice_scores) == pytest.approx(np.mean(expected))
    assert average_mu_n(ds, ds.scores) == pytest.approx(100.0)      # the oracle
    assert np.nanmean(metric_utility(ds), axis=None) == pytest.approx(0.0, abs=1e-9)  # random: 0 on average
