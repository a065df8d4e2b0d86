import math

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.metrics import alpaca_lc
from lookahead_router.metrics.arena_hard import bt_win_rate, game_value
from lookahead_router.metrics.native import metric_for, normalised, oracle_choice


def make_ds(source, scores, payloads=None, responses=None, candidates=("a", "b")):
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    queries = pd.DataFrame({"id": [f"{source}/{i}" for i in range(n)], "source": source, "split": "test",
                            "prompt": [f"p{i}" for i in range(n)], "turns": [[f"p{i}"] for i in range(n)],
                            "payload": payloads or [{} for _ in range(n)]})
    if responses is None:
        responses = np.array([["r"] * len(candidates)] * n, dtype=object)
    return RoutingDataset(list(candidates), queries, responses, scores)


def test_accuracy_and_missing_response_counts_as_failure():
    ds = make_ds("GSM8K", [[1, 0], [0, 1], [1, np.nan], [0, 0]])
    metric = metric_for("GSM8K", ds)
    assert metric(np.array([0, 0, 0, 0])) == 50.0
    assert metric(np.array([0, 1, 1, 0])) == 50.0  # row 2 picks the missing response: a failure
    assert metric(oracle_choice(metric)) == 75.0


def test_mt_bench_mean_of_both_turns_and_oracle_tie_break():
    payloads = [{"turn_scores": {"a": [8, 2], "b": [8, 10]}},  # turn-1 tie: the two-turn mean decides
                {"turn_scores": {"a": [9, 1], "b": [7, 10]}}]  # routing uses turn 1 only
    ds = make_ds("MT-Bench", [[8, 8], [9, 7]], payloads)
    metric = metric_for("MT-Bench", ds)
    assert metric(np.array([0, 0])) == pytest.approx((8 + 2 + 9 + 1) / 4)
    assert list(oracle_choice(metric)) == [1, 0]
    assert metric(oracle_choice(metric)) == pytest.approx((8 + 10 + 9 + 1) / 4)


def test_arena_hard_hand_cases():
    assert bt_win_rate([["B>A", "A>B"]]) == 100.0  # candidate is B in game 1, A in game 2
    assert bt_win_rate([["A>>B", "A=B"]]) == pytest.approx(100 * 0.5 / 4)  # strong loss weighs 3
    # An unparsable verdict counts as a strong loss (the paper's code), or is dropped (Arena-Hard-Auto).
    assert bt_win_rate([["B>>A", None], ["A>B", "B>A"]]) == pytest.approx(100 * 3 / 8)
    assert bt_win_rate([["B>>A", None], ["A>B", "B>A"]], unparsable="drop") == pytest.approx(100 * 3 / 5)
    assert bt_win_rate([[None, None]]) == 0.0
    assert math.isnan(bt_win_rate([[None, None]], unparsable="drop"))
    with pytest.raises(ValueError):
        bt_win_rate([["A>B"]], unparsable="tie")


def test_arena_hard_per_query_routing_score():
    assert [game_value(v, 0) for v in ("A>>B", "A>B", "A=B", "B>A", "B>>A", None)] == [-3, -1, 0, 1, 3, -3]
    assert [game_value(v, 1) for v in ("A>>B", "A>B", "A=B", "B>A", "B>>A", None)] == [3, 1, 0, -1, -3, -3]


def _arena_logistic_fit(games_per_model):
    """Arena-Hard-Auto's compute_mle_elo on battles against the anchor, for comparison."""
    rows = []
    for m, games in enumerate(games_per_model):
        for q in games:
            for g, verdict in enumerate(q):
                if verdict is None:  # unparsable judgment: no battle
                    continue
                strong = verdict in ("A>>B", "B>>A")
                if verdict == "A=B":
                    winner = "tie"
                elif (verdict in ("A>B", "A>>B")) == (g == 0):
                    winner = "baseline"
                else:
                    winner = "model"
                rows += [(m + 1, winner)] * (3 if strong else 1)
    rows = rows + rows  # arena-hard duplicates the battles: a tie becomes one win and one loss
    x = np.zeros((len(rows), len(games_per_model) + 1))
    y = np.zeros(len(rows))
    for i, (m, winner) in enumerate(rows):
        x[i, 0], x[i, m] = math.log(10), -math.log(10)
        y[i] = winner == "baseline" or (winner == "tie" and i < len(rows) // 2)
    coef = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-10, max_iter=1000).fit(x, y).coef_[0]
    elo = 400 * coef
    return [100 / (1 + 10 ** ((elo[0] - elo[m]) / 400)) for m in range(1, len(games_per_model) + 1)]


def test_arena_hard_closed_form_equals_bradley_terry_fit():
    rng = np.random.default_rng(0)
    verdicts = ["A>>B", "A>B", "A=B", "B>A", "B>>A", None]
    models = [[[verdicts[k] for k in rng.integers(0, 6, 2)] for _ in range(40)] for _ in range(3)]
    fitted = _arena_logistic_fit(models)
    for games, expected in zip(models, fitted):
        assert bt_win_rate(games, unparsable="drop") == pytest.approx(expected, abs=1e-3)


def test_normalised_score():
    assert normalised(50, 40, 60) == 50.0
    assert normalised(40, 40, 60) == 0.0 and normalised(60, 40, 60) == 100.0
    assert math.isnan(normalised(40, 40, 40))


def _alpaca_ds(prefs, out_lens, ref_lens):
    n = len(ref_lens)
    payloads = [{"index": i, "reference": "r" * ref_lens[i]} for i in range(n)]
    responses = np.array([["x" * l for l in row] for row in out_lens], dtype=object)
    return make_ds("AlpacaEval", prefs, payloads, responses)


def test_alpaca_lc_even_preferences_give_fifty():
    n = 40
    ds = _alpaca_ds(np.full((n, 2), 1.5), [[100 + i, 120 + i] for i in range(n)], [110] * n)
    metric = metric_for("AlpacaEval", ds)
    assert metric.method == alpaca_lc.OFFLINE
    assert metric(np.zeros(n, dtype=int)) == pytest.approx(50.0, abs=0.5)


def test_alpaca_lc_removes_a_pure_length_effect():
    """A judge that only rewards length: a longer model wins raw, but not once length is controlled."""
    rng = np.random.default_rng(1)
    n = 300
    ref = rng.integers(200, 400, n)
    outs = np.stack([ref + rng.integers(-150, 150, n), ref + rng.integers(-150, 150, n)], axis=1)
    delta = (ref[:, None] - outs) / 100.0
    prefs = 1 + 1 / (1 + np.exp(2.0 * delta))  # P(model wins) depends on length only
    ds = _alpaca_ds(prefs, outs, ref)
    metric = metric_for("AlpacaEval", ds)
    for j in range(2):
        assert metric(np.full(n, j)) == pytest.approx(50.0, abs=3.0)


def _official_files(tmp_path, n):
    """A df_gamed.csv in alpaca_eval's format (two gamed baselines) for `n` instructions."""
    rng = np.random.default_rng(2)
    rows = []
    for model, sign in (("verbose", -1), ("concise", 1)):
        for i in range(n):
            d = sign * abs(rng.normal(1, 0.3))
            rows.append({"model": model, "index": i, "preference": 1 / (1 + np.exp(2 * d)),
                         "std_delta_len": d, "instruction_difficulty": np.sin(i), "not_gamed_baseline": False})
    path = tmp_path / "df_gamed.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_alpaca_lc_official_path_matches_alpaca_eval(tmp_path, monkeypatch):
    """With df_gamed.csv present we must reproduce alpaca_eval's own get_length_controlled_winrate."""
    n = 60
    rng = np.random.default_rng(3)
    ref = rng.integers(200, 400, n)
    outs = np.stack([ref + rng.integers(-100, 200, n), ref + rng.integers(-100, 100, n)], axis=1)
    prefs = 1 + rng.random((n, 2))
    gamed = _official_files(tmp_path, n)
    ds = _alpaca_ds(prefs, outs, ref)
    metric = metric_for("AlpacaEval", ds, alpaca_files=tmp_path)
    assert metric.method == alpaca_lc.OFFICIAL
    ours = metric(np.zeros(n, dtype=int))

    glm = alpaca_lc._glm()
    monkeypatch.setattr(glm, "hf_hub_download", lambda **kw: str(gamed))
    annotations = pd.DataFrame({"instruction": [f"p{i}" for i in range(n)], "output_1": ["r" * l for l in ref],
                                "output_2": ["x" * l for l in outs[:, 0]], "generator_1": "ref",
                                "generator_2": "a", "annotator": "judge", "preference": prefs[:, 0]})
    official = glm.get_length_controlled_winrate(annotations, save_weights_dir=None)
    assert ours == pytest.approx(official["length_controlled_winrate"], abs=1e-9)
