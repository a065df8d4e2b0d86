"""kNN, k-means and SMOOTHIE routers on tiny datasets whose best candidate is obvious."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.data.labels import normalised_scores
from lookahead_router.routers.base import Router, RouterError
from lookahead_router.routers.registry import ROUTERS
from lookahead_router.routers.similarity import (KMeansRouter, KNNRouter, SmoothieRouter,
                                                 smoothie_weights, triplet_weights)

CANDS = ["A", "B", "C"]
MATH = ["Solve the equation 3x + 7 = 22 for x.", "What is the derivative of x^3 sin(x)?",
        "Compute the integral of 1/(1+x^2) from 0 to 1.", "Find all prime factors of 360.",
        "How many ways can 5 people sit around a round table?", "Simplify (x^2 - 9)/(x - 3).",
        "What is the sum of the interior angles of a hexagon?", "Solve the quadratic x^2 - 5x + 6 = 0.",
        "Find the limit of sin(x)/x as x approaches 0.", "What is 17 percent of 240?"]
CODE = ["Write a Python function that reverses a linked list.", "Implement binary search in Java.",
        "Fix this JavaScript bug: TypeError undefined is not a function.",
        "Write a SQL query returning the top 5 customers by revenue.",
        "How do I read a CSV file with pandas?", "Implement a thread-safe queue in C++.",
        "Write a Rust function that parses command line arguments.",
        "Refactor this Python class to use dataclasses.", "Write a bash script that renames all .txt files.",
        "Implement quicksort in Go."]
HELD_MATH = ["Solve 2x - 4 = 10 for x.", "What is the derivative of e^(2x) cos(x)?"]
HELD_CODE = ["Write a Python function to merge two sorted lists.", "Implement a stack class in TypeScript."]


@pytest.fixture(scope="module", autouse=True)
def feature_cache(tmp_path_factory):
    """One feature cache for the module: each text is embedded once, and $HOME is untouched."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOOKAHEAD_CACHE", str(tmp_path_factory.mktemp("features")))
        yield


def make_ds(prompts, scores, responses=None, candidates=CANDS, source="s"):
    n = len(prompts)
    queries = pd.DataFrame({"id": [f"{source}/{i}" for i in range(n)], "source": source, "split": "train",
                            "prompt": prompts, "turns": [[p] for p in prompts], "payload": [{}] * n})
    if responses is None:
        responses = np.array([["r"] * len(candidates)] * n, dtype=object)
    return RoutingDataset(list(candidates), queries, np.asarray(responses, dtype=object), scores)


@pytest.fixture(scope="module")
def topical():
    """Math: A scores 1, B 0.3, C 0; code: C 1, B 0.3, A 0; a few scores missing."""
    scores = np.array([[1.0, 0.3, 0.0]] * len(MATH) + [[0.0, 0.3, 1.0]] * len(CODE))
    scores[0, 1] = scores[len(MATH), 1] = np.nan
    return make_ds(MATH + CODE, scores)


@pytest.mark.parametrize("make", [lambda: KNNRouter(k=5), lambda: KMeansRouter(k=2)], ids=["knn", "kmeans"])
def test_routes_by_topic_and_round_trips(make, topical, tmp_path):
    router = make().fit(topical)
    held = HELD_MATH + HELD_CODE
    assert [d.model for d in router.route(held)] == ["A"] * len(HELD_MATH) + ["C"] * len(HELD_CODE)
    scores = router.score(held)
    assert scores.shape == (len(held), 3) and scores.min() >= 0 and scores.max() <= 1
    loaded = Router.load(router.save(tmp_path / router.name))
    assert type(loaded) is type(router) and loaded.config == router.config
    assert loaded.candidates == CANDS
    np.testing.assert_array_equal(loaded.score(held), scores)


def test_knn_k_beyond_n_is_the_global_mean(topical):
    scores = KNNRouter(k=10_000).fit(topical).score(HELD_MATH + HELD_CODE)
    expected = np.nanmean(normalised_scores(topical), axis=0)
    np.testing.assert_allclose(scores, np.broadcast_to(expected, scores.shape), rtol=1e-6)


def test_knn_missing_scores_get_no_credit(topical):
    # k=1 on a training prompt returns its own row; its missing B score becomes 0, not NaN.
    np.testing.assert_allclose(KNNRouter(k=1).fit(topical).score([MATH[0]]), [[1.0, 0.0, 0.0]])


def test_kmeans_k_beyond_n_gives_each_prompt_its_own_cluster(topical):
    router = KMeansRouter(k=500).fit(topical)
    assert len(router.centroids) == len(topical)
    np.testing.assert_allclose(router.score(CODE[:2]), np.nan_to_num(normalised_scores(topical))[10:12],
                               atol=1e-6)


def test_registered_and_options_checked():
    assert ROUTERS["knn"].cls is KNNRouter and ROUTERS["kmeans"].cls is KMeansRouter
    assert ROUTERS["smoothie"].cls is SmoothieRouter
    assert KNNRouter(k=7).config.to_dict() == {"backbone": "minilm", "max_length": 256, "batch_size": 32,
                                               "progress": True, "k": 7}
    with pytest.raises(RouterError):
        KNNRouter(k=0)
    with pytest.raises(RouterError, match=r"unknown option\(s\) \['n0'\]"):
        KNNRouter(n0=5)


# ---- SMOOTHIE --------------------------------------------------------------------------------
def test_triplet_estimator_recovers_noise_ordering():
    rng = np.random.default_rng(0)
    sigma = np.array([0.1, 0.3, 0.6, 1.0, 0.2])
    y = rng.normal(size=(400, 1, 32))
    emb = y + sigma[None, :, None] * rng.normal(size=(400, 5, 32))
    mask = np.ones((400, 5), dtype=bool)
    w = smoothie_weights(emb, mask)
    assert w.shape == (5,) and w.sum() == pytest.approx(1.0)
    assert list(np.argsort(-w)) == list(np.argsort(sigma))
    # θ ∝ 1/σ²: the estimate is close to the truth.
    np.testing.assert_allclose(w, (1 / sigma**2) / (1 / sigma**2).sum(), rtol=0.2)
    # Masked responses are ignored whatever they hold.
    mask[:200, 0] = False
    emb[:200, 0] = 1e3
    assert list(np.argsort(-smoothie_weights(emb, mask))) == list(np.argsort(sigma))


def test_triplet_estimator_edge_cases():
    # Two candidates: δ_12 is split equally, so no candidate stands out.
    np.testing.assert_allclose(triplet_weights(np.array([[0.0, 2.0], [2.0, 0.0]])), [0.5, 0.5])
    # A candidate never seen with the others gets weight 0; nothing seen at all -> uniform.
    delta = np.array([[0, 1, 1, np.nan], [1, 0, 1, np.nan], [1, 1, 0, np.nan], [np.nan] * 4])
    w = triplet_weights(delta)
    np.testing.assert_allclose(w, [1 / 3, 1 / 3, 1 / 3, 0])
    np.testing.assert_allclose(triplet_weights(np.full((3, 3), np.nan)), [1 / 3] * 3)


def test_smoothie_prefers_consensus_and_ignores_scores(tmp_path):
    prompts = MATH + CODE
    cands = ["A", "B", "C", "D"]
    noise = ["I enjoy hiking in the mountains during autumn.", "The recipe needs two cups of flour.",
             "My favourite band released a new album.", "Tomorrow it will rain in Paris.",
             "Cats sleep for most of the day."]
    responses = np.array([[f"Here is the answer to: {p}", f"Sure. Here is the answer to: {p}",
                           f"Answer to your question: {p}", noise[i % len(noise)]]
                          for i, p in enumerate(prompts)], dtype=object)
    responses[3, 1] = None  # a missing response is simply unavailable
    scores = np.zeros((len(prompts), 4))
    scores[:, 3] = 1.0  # labels favour D: SMOOTHIE must not look at them
    router = SmoothieRouter(n0=8).fit(make_ds(prompts, scores, responses, cands))
    held = HELD_MATH + HELD_CODE
    s = router.score(held)
    assert s.shape == (len(held), 4)
    np.testing.assert_allclose(s.sum(axis=1), 1.0, rtol=1e-5)
    assert (s.argmin(axis=1) == 3).all()
    loaded = Router.load(router.save(tmp_path / "smoothie"))
    np.testing.assert_array_equal(loaded.score(held), s)
