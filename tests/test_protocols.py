import numpy as np
import pytest

from lookahead_router.data.labels import binary_labels, normalised_scores
from lookahead_router.data.splits import ProtocolError, make_folds
from tests.test_metrics import make_ds


def test_labels_min_max_within_each_source():
    ds = make_ds("MT-Bench", [[2, 10], [6, np.nan]])
    other = make_ds("GSM8K", [[0, 1], [1, 1]])
    both = type(ds).concat([ds, other])
    norm = normalised_scores(both)
    np.testing.assert_allclose(norm[:2], [[0.0, 1.0], [0.5, np.nan]])
    np.testing.assert_allclose(norm[2:], [[0.0, 1.0], [1.0, 1.0]])
    labels = binary_labels(both, rule="absolute")
    np.testing.assert_array_equal(labels[:2], [[0, 1], [0, np.nan]])
    np.testing.assert_array_equal(binary_labels(both, threshold=0.5, rule="absolute")[1], [1, np.nan])
    with pytest.raises(ValueError):
        binary_labels(both, threshold=1.5)
    with pytest.raises(ValueError, match="labels must be one of"):
        binary_labels(both, rule="soft")


def test_relative_labels_make_every_prompts_best_candidate_positive(fake_dataset):
    """The authors' rule: positive when the normalised score reaches 0.8 x the prompt's best, so the
    best candidate of every prompt is positive, a full tie makes all positive, and a prompt no
    candidate answers well under the absolute rule still gets its positives."""
    ds = make_ds("ArenaHard", [[-6, -2], [0, 6], [1, 1], [-6, np.nan]])
    rel, ab = binary_labels(ds), binary_labels(ds, rule="absolute")
    np.testing.assert_array_equal(rel, [[0, 1], [0, 1], [1, 1], [1, np.nan]])
    assert np.nansum(ab[0]) == 0 and np.nansum(rel[0]) == 1
    for data in (ds, fake_dataset):
        labels, norm = binary_labels(data), normalised_scores(data)
        for row_labels, row_norm in zip(labels, norm):
            if not np.isnan(row_norm).all():
                assert row_labels[np.nanargmax(row_norm)] == 1


def test_cv_is_stratified_seeded_and_covers_every_test_query_once(fake_dataset):
    folds = make_folds(fake_dataset, "cv", k=3, seed=7)
    test_rows = np.flatnonzero(fake_dataset.queries["split"] == "test")
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested) == sorted(test_rows)
    source = fake_dataset.queries["source"].to_numpy()
    for f in folds:
        assert not set(f.train) & set(f.test)
        assert set(source[f.test]) == set(source[test_rows])  # every benchmark in every fold
        assert "SelfOSS" not in set(source[f.train])
    again = make_folds(fake_dataset, "cv", k=3, seed=7)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(folds, again))
    other = make_folds(fake_dataset, "cv", k=3, seed=8)
    assert not all(np.array_equal(a.test, b.test) for a, b in zip(folds, other))


def test_add_train_joins_selfoss_to_every_training_fold(fake_dataset):
    selfoss = set(np.flatnonzero(fake_dataset.queries["source"] == "SelfOSS"))
    for f in make_folds(fake_dataset, "cv", k=3, add_train=True):
        assert selfoss <= set(f.train) and not selfoss & set(f.test)


def test_lobo_and_explicit_split(fake_dataset):
    source = fake_dataset.queries["source"].to_numpy()
    folds = make_folds(fake_dataset, "lobo")
    assert [f.name for f in folds] == ["AlpacaEval", "ArenaHard", "MT-Bench", "GSM8K", "MATH", "HumanEval", "MBPP"]
    for f in folds:
        assert set(source[f.test]) == {f.name} and f.name not in set(source[f.train])
    (split,) = make_folds(fake_dataset, "split")
    assert set(source[split.train]) == {"SelfOSS"} and "SelfOSS" not in set(source[split.test])


def test_protocol_errors(fake_dataset):
    with pytest.raises(ProtocolError, match="bootstrap: no such protocol"):
        make_folds(fake_dataset, "bootstrap")
    with pytest.raises(ProtocolError, match="fewer than k"):
        make_folds(fake_dataset, "cv", k=6)  # MT-Bench has 5 queries
    with pytest.raises(ProtocolError, match="two test benchmarks"):
        make_folds(fake_dataset.where(source="GSM8K"), "lobo")
