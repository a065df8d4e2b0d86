"""Seeds, paired comparisons and task-best on small hand-built cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.evaluation.comparisons import compare
from lookahead_router.evaluation.decisions import Decisions, task_best_decisions
from lookahead_router.evaluation.report import aggregate, evaluate
from lookahead_router.metrics.native import metric_for
from tests.test_metrics import make_ds


def gsm(n: int = 40) -> RoutingDataset:
    """Candidate a is right on the even queries, b on the odd ones (Random 50, Oracle 100)."""
    return make_ds("GSM8K", [[1, 0] if i % 2 == 0 else [0, 1] for i in range(n)])


def picks(ds, models, name):
    return Decisions(name, ds.ids, list(models))


def test_parts_reproduce_every_native_metric(fake_dataset):
    """μo = sum(numerator) / sum(denominator) over queries, for every benchmark's metric."""
    for bench in ("AlpacaEval", "ArenaHard", "MT-Bench", "GSM8K", "HumanEval"):
        part = fake_dataset.where(source=bench)
        part = part.subset(part.available.all(axis=1))
        metric = metric_for(bench, part)
        choice = np.arange(len(part)) % len(part.candidates)
        numerator, denominator = metric.parts(choice)
        assert numerator.sum() / denominator.sum() == pytest.approx(metric(choice))


def test_seeds_average_with_sample_standard_deviation():
    ds = gsm()
    oracle = ["a" if i % 2 == 0 else "b" for i in range(len(ds))]
    # seed 0: the oracle (μn 100); seed 1: always a (μn 0)
    reports = [evaluate(ds, decisions=[picks(ds, models, "r")])
               for models in (oracle, ["a"] * len(ds))]
    report = aggregate(reports)
    cell = report.rows["r"]["GSM8K"]
    assert cell["mu_n"] == pytest.approx(50.0) and cell["mu_n_std"] == pytest.approx(np.std([100, 0], ddof=1))
    assert report.to_dict()["rows"]["r"]["avg_mu_n_std"] == pytest.approx(70.71, abs=0.01)
    assert "mu_n_std" not in report.rows["oracle"]["GSM8K"]      # references do not change with the seed
    assert report.seeds == 2 and "± " in report.to_markdown()


def test_paired_bootstrap_knows_the_answer():
    # a answers every query right and b none (Random 50, Oracle 100): on every draw of queries,
    # always-a has μn 100 and always-b −100, so their difference is exactly 200
    sure = make_ds("GSM8K", [[1, 0]] * 30)
    always_a, always_b = picks(sure, ["a"] * 30, "a"), picks(sure, ["b"] * 30, "b")
    (c,) = compare(sure, ["GSM8K"], {"a": [always_a], "b": [always_b]}, [("a", "b")], n_bootstrap=200)
    assert c.diff == pytest.approx(200.0) and c.low == pytest.approx(200.0) and c.high == pytest.approx(200.0)
    # pooled over seeds: the mean of the seeds' differences (200 and 0)
    (pooled,) = compare(sure, ["GSM8K"], {"r": [always_a, always_b], "b": [always_b, always_b]}, [("r", "b")],
                        n_bootstrap=200)
    assert pooled.diff == pytest.approx(100.0) and pooled.low == pytest.approx(100.0)
    # identical decisions: a zero difference with a zero-width interval
    (same,) = compare(sure, ["GSM8K"], {"x": [always_a], "y": [always_a]}, [("x", "y")], n_bootstrap=200)
    assert same.diff == same.low == same.high == 0.0
    # a router right on half the queries ties always-a on average, and the interval says so
    ds = gsm()
    half = picks(ds, ["a" if i % 4 < 2 else "b" for i in range(len(ds))], "half")
    (noisy,) = compare(ds, ["GSM8K"], {"half": [half], "a": [picks(ds, ["a"] * len(ds), "a")]},
                       [("half", "a")], n_bootstrap=2000)
    assert noisy.diff == pytest.approx(0.0, abs=1e-9) and noisy.low < 0 < noisy.high
    assert noisy.to_dict()["ci95"] == [noisy.low, noisy.high]


def test_task_best_uses_the_training_rows_of_each_benchmark():
    train = RoutingDataset.concat([make_ds("GSM8K", [[0, 1], [1, 1], [0, 1], [0, 1]]),
                                   make_ds("MATH", [[1, 0], [1, 0]])])
    test = RoutingDataset.concat([make_ds("GSM8K", [[1, 0]]), make_ds("MATH", [[0, 1]]),
                                  make_ds("MBPP", [[0, 1]])])
    test.queries["id"] = [f"t{i}" for i in range(len(test))]
    decisions = task_best_decisions(train, test)
    # GSM8K: b is best in training; MATH: a; MBPP is not in training: the best over all rows (b: 4/6)
    assert decisions.models == ["b", "a", "b"] and decisions.ids == ["t0", "t1", "t2"]
