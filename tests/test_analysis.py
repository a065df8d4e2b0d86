"""`lookahead analyze` and `lookahead report` on a hand-built benchmark folder whose shares, wins /
ties / losses, costs and cases are worked out by hand below; the retraining kinds on a smoke run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lookahead_router.analysis.cost import pareto
from lookahead_router.analysis.retrain import efficiency_ratio
from lookahead_router.cli.main import app
from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.evaluation.benchmark import write_outputs
from lookahead_router.precision import environment
from lookahead_router.evaluation.decisions import Decisions
from lookahead_router.evaluation.report import evaluate

runner = CliRunner()
CANDS = ["a", "b", "c"]
# GSM8K (binary): per test query the candidates' correctness, A's and B's choice.
#   r0 1 correct, A right; r1 1 correct, A right; r2 2 correct, B right; r3 all correct; r4 none; r5 1, A right
GSM = [([1, 0, 0], "a", "b"), ([0, 1, 0], "b", "a"), ([1, 1, 0], "c", "a"),
       ([1, 1, 1], "a", "b"), ([0, 0, 0], "a", "b"), ([0, 0, 1], "c", "a")]
# Chat (continuous): spreads .8 .1 .4 .6 .1 .4 -> thirds high low mid high low mid
CHAT = [([.9, .1, .5], "a", "c"), ([.2, .3, .25], "b", "b"), ([.5, .5, .9], "a", "c"),
        ([.6, .0, .3], "a", "b"), ([.1, .15, .2], "a", "c"), ([.3, .7, .5], "b", "b")]
PRICES = {"a": 1.0, "b": 0.5, "c": 0.1}
PARAMS = {"a": 30, "b": 10, "c": 1}


def hand_built_bench(root: Path) -> tuple[Path, Path]:
    """A routing dataset (4 training + 6 test queries per source) and a benchmark folder with two
    routers' decisions on the test queries, laid out as `lookahead benchmark` writes them."""
    rows, scores = [], []
    for source, table in (("GSM8K", GSM), ("Chat", CHAT)):
        for i in range(4):   # training rows: task-best picks a on GSM8K and b on Chat
            rows.append((f"{source}/train{i}", source, "train"))
            scores.append([1, 0, 0] if source == "GSM8K" else [.2, .8, .5])
        for i, (s, _, _) in enumerate(table):
            rows.append((f"{source}/{i}", source, "test"))
            scores.append(s)
    queries = pd.DataFrame({"id": [r[0] for r in rows], "source": [r[1] for r in rows], "split": [r[2] for r in rows],
                            "prompt": [f"prompt of {r[0]} " + "p" * (40 - len(f"prompt of {r[0]} ")) for r in rows],
                            "turns": [[f"prompt of {r[0]}"] for r in rows], "payload": [{} for _ in rows]})
    responses = np.array([[f"answer of {c} " + "x" * (400 - len(f"answer of {c} ")) for c in CANDS] for _ in rows],
                         dtype=object)
    ds = RoutingDataset(CANDS, queries, responses, np.array(scores, dtype=float))
    data = ds.save(root / "hand.parquet")
    bench = root / "bench"
    decisions = []
    for k, name in ((1, "lookahead-mlm"), (2, "mlc-mlm")):
        ids, models, dec_scores = [], [], []
        for source, table in (("GSM8K", GSM), ("Chat", CHAT)):
            for i, row in enumerate(table):
                ids.append(f"{source}/{i}")
                models.append(row[k])
                dec_scores.append({c: (0.9 if c == row[k] else 0.1 * (j + 1)) for j, c in enumerate(CANDS)})
        d = Decisions(name, ids, models, dec_scores)
        d.save(bench / "decisions" / name / "seed0" / "split.jsonl")
        decisions.append(d)
    from lookahead_router.evaluation.decisions import task_best_decisions
    test = ds.where(split="test")
    tb = task_best_decisions(ds.where(split="train"), test)
    report = evaluate(ds, decisions=[tb, *decisions], benchmarks=["GSM8K", "Chat"])
    meta = {"preset": "hand-built", "preset_description": "by hand", "protocol": "split", "add_train": False,
            "seeds": [0], "folds": ["split"], "router_options": {}, "timings": {}, "wall_s": 1.0,
            "peak_rss_mib": 1.0, **environment(), "dataset_rows": len(ds), "labels": {}, "truncation": [],
            "candidates": CANDS}
    write_outputs(report, [], meta, bench, ["lookahead-mlm", "mlc-mlm"])
    return data, bench


@pytest.fixture
def hand_bench(tmp_path) -> tuple[Path, Path]:
    return hand_built_bench(tmp_path)


def _analyze(kind: str, data: Path, bench: Path, out: Path, *extra: str) -> dict:
    result = runner.invoke(app, ["analyze", kind, "--bench", str(bench), "--data", str(data), "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return json.loads((out / kind / f"{kind}.json").read_text())


def test_shares_match_the_hand_counts(hand_bench, tmp_path):
    data, bench = hand_bench
    written = _analyze("shares", data, bench, tmp_path / "an")
    assert written["environment"]["run"]["precision"] == environment()["precision"]   # what the run used
    got = written["summary"]["shares"]["GSM8K"]
    assert got["lookahead-mlm"] == pytest.approx({"a": 50.0, "b": 100 / 6, "c": 100 / 3})
    assert got["mlc-mlm"] == pytest.approx({"a": 50.0, "b": 50.0, "c": 0.0})
    # oracle: r0 a, r1 b, r2 a+b, r3 a+b+c, r4 a+b+c (none correct), r5 c, split evenly
    assert got["oracle"] == pytest.approx({"a": (1 + .5 + 2 / 3) / 6 * 100, "b": (1 + .5 + 2 / 3) / 6 * 100,
                                           "c": (2 / 3 + 1) / 6 * 100})
    assert got["task-best"] == pytest.approx({"a": 100.0, "b": 0.0, "c": 0.0})
    assert (tmp_path / "an" / "shares" / "shares.png").stat().st_size > 5000


def test_difficulty_counts_wins_ties_and_losses_per_group(hand_bench, tmp_path):
    data, bench = hand_bench
    summary = _analyze("difficulty", data, bench, tmp_path / "an", "--a", "lookahead-mlm", "--b", "mlc-mlm")["summary"]
    wtl = {g: (v["wins"], v["ties"], v["losses"]) for g, v in summary["groups"].items()}
    assert wtl == {"0 of 3 correct": (0, 1, 0), "1 of 3 correct": (3, 0, 0), "2 of 3 correct": (0, 0, 1),
                   "3 of 3 correct": (0, 1, 0), "spread: low": (0, 1, 1), "spread: mid": (0, 1, 1),
                   "spread: high": (2, 0, 0)}
    one = summary["groups"]["1 of 3 correct"]
    assert one["margin"] == pytest.approx(100.0)
    assert one["mu_n"]["lookahead-mlm"] == pytest.approx(100.0) and one["mu_n"]["mlc-mlm"] == pytest.approx(-50.0)
    assert np.isnan(summary["groups"]["0 of 3 correct"]["mu_n"]["mlc-mlm"])   # Random = Oracle there


def test_cost_points_and_pareto_frontier(hand_bench, tmp_path):
    data, bench = hand_bench
    config = tmp_path / "models.yaml"
    config.write_text("models:\n" + "".join(f"  {c}:\n    replay: {data}\n    price_input: {p}\n    price_output: {p}\n"
                                            f"    params_b: {PARAMS[c]}\n" for c, p in PRICES.items()))
    summary = _analyze("cost", data, bench, tmp_path / "an", "--config", str(config), "--curves", "lookahead-mlm")["summary"]
    points = summary["points"]
    # 10 prompt tokens + 100 response tokens per call: 0.11 $ per 1k queries per $ per M tokens
    assert points["a"]["cost_per_1k"] == pytest.approx(0.11) and points["c"]["cost_per_1k"] == pytest.approx(0.011)
    # lookahead-mlm picks a 7 times, b 3 times and c twice over the 12 test queries
    assert points["lookahead-mlm"]["cost_per_1k"] == pytest.approx((7 * .11 + 3 * .055 + 2 * .011) / 12)
    assert points["lookahead-mlm"]["params_b"] == pytest.approx((7 * 30 + 3 * 10 + 2 * 1) / 12)
    assert points["oracle"]["avg_mu_n"] == pytest.approx(100.0)
    front = summary["pareto"]
    assert front[0] == "c" and front[-1] == "oracle" and "a" not in front   # a: dearest, beaten by the oracle
    curve = summary["curves"]["lookahead-mlm"]
    assert curve[0]["w"] == 0 and curve[-1]["cost_per_1k"] <= curve[0]["cost_per_1k"]


def test_pareto_keeps_only_undominated_points():
    points = {"cheap": (1.0, 10.0), "dear-worse": (5.0, 8.0), "mid": (2.0, 20.0), "same-cost-worse": (2.0, 15.0),
              "best": (9.0, 30.0)}
    assert pareto(points) == ["cheap", "mid", "best"]


def test_efficiency_ratio_interpolates_and_bounds():
    assert efficiency_ratio([(0.1, 10.0), (0.5, 30.0), (1.0, 40.0)], 20.0)["ratio"] == pytest.approx(1 / 0.3)
    assert efficiency_ratio([(0.1, 25.0), (1.0, 40.0)], 20.0)["bound"] == "at least"
    assert efficiency_ratio([(0.1, 5.0), (1.0, 10.0)], 20.0)["ratio"] is None


def test_cases_show_disagreements_where_exactly_one_is_right(hand_bench, tmp_path):
    data, bench = hand_bench
    summary = _analyze("cases", data, bench, tmp_path / "an", "--a", "lookahead-mlm", "--b", "mlc-mlm",
                       "--limit", "4")["summary"]
    assert (summary["a_right"], summary["b_right"]) == (5, 3)
    cases = summary["cases"]
    assert len(cases) == 4 and {c["right"] for c in cases} == {"lookahead-mlm", "mlc-mlm"}
    assert {c["benchmark"] for c in cases} == {"GSM8K", "Chat"}    # taken in turn from each benchmark
    first = cases[0]
    assert first["candidates"]["a"]["score lookahead-mlm"] == pytest.approx(0.9)
    assert first["candidates"]["a"]["response"].startswith("answer of a") and len(first["candidates"]["a"]["response"]) <= 300


def test_analyze_errors_name_the_problem(hand_bench, tmp_path):
    data, bench = hand_bench
    bad = runner.invoke(app, ["analyze", "nope", "--bench", str(bench), "--data", str(data)])
    assert bad.exit_code == 2 and "unknown analysis 'nope'" in bad.output
    missing = runner.invoke(app, ["analyze", "difficulty", "--bench", str(bench), "--data", str(data), "--out",
                                  str(tmp_path), "--a", "lookahead-mlm", "--b", "knn"])
    assert missing.exit_code == 2 and "no finished decisions for ['knn']" in missing.output
    nocfg = runner.invoke(app, ["analyze", "cost", "--bench", str(bench), "--data", str(data), "--out", str(tmp_path)])
    assert nocfg.exit_code == 2 and "--config" in nocfg.output
    empty = runner.invoke(app, ["analyze", "shares", "--bench", str(tmp_path), "--data", str(data)])
    assert empty.exit_code == 2 and "no report.json" in empty.output
    ran_in = json.loads((bench / "report.json").read_text())["run"]["precision"]
    other = "fp32" if ran_in == "bf16" else "bf16"
    mixed = runner.invoke(app, ["--precision", other, "analyze", "sweep", "--bench", str(bench), "--data", str(data),
                                "--out", str(tmp_path), "--work", str(tmp_path / "work")])
    assert mixed.exit_code == 2, mixed.output
    assert f"was run with the torch engine in {ran_in}; this process computes in {other}" in mixed.output


def test_report_is_one_self_contained_page(hand_bench, tmp_path):
    data, bench = hand_bench
    out = tmp_path / "an"
    for kind in ("shares", "difficulty", "cases"):
        _analyze(kind, data, bench, out)
    results = tmp_path / "results"
    results.mkdir()
    (results / "router_cost_cpu.md").write_text("# Router cost\n\n| router | p50 ms |\n|---|---|\n| knn | 47.1 |\n")
    html_path = tmp_path / "report.html"
    result = runner.invoke(app, ["report", "--bench", str(bench), "--analyses", str(out), "--results", str(results),
                                 "--out", str(html_path)])
    assert result.exit_code == 0, result.output
    html = html_path.read_text()
    assert not re.search(r"(https?:)?//[\w.-]+\.\w+/", html.replace("data:image/png;base64,", ""))   # no URL
    assert "<script" not in html and html.count("data:image/png;base64,") == 3   # mu_n, shares, difficulty
    for text in ("Routing shares per benchmark", "Wins, ties and losses", "Case study", "<td>47.1</td>",
                 "lookahead-mlm", "hand-built", f"{environment()['precision']} (setting "):
        assert text in html, text
    assert "<table" in html and "| knn |" not in html   # markdown rendered into tables
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("no headless Chromium installed: the page was checked as text only")
    shot = tmp_path / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    f"--screenshot={shot}", "--window-size=1280,2000", html_path.as_uri()],
                   check=True, capture_output=True, timeout=120)
    assert shot.stat().st_size > 20000   # a rendered page, not a blank one


@pytest.fixture
def smoke_run(fake_dataset, tmp_path):
    """A smoke benchmark (cv5, one seed) of a Lookahead router, its λ = 0 row and MLC."""
    root = tmp_path / "smoke"
    data = fake_dataset.save(root / "fake.parquet")
    result = runner.invoke(app, ["benchmark", "--data", str(data), "--preset", "smoke", "--routers",
                                 "mlc-mlm,lookahead-mlm-norm,lookahead-mlm", "--out", str(root / "bench")])
    assert result.exit_code == 0, result.output
    return data, root / "bench", json.loads((root / "bench" / "report.json").read_text())["rows"]


def test_retraining_kinds_reuse_the_run_where_the_point_is_the_run(smoke_run, tmp_path):
    data, bench, rows = smoke_run
    work = tmp_path / "work"
    common = ["--work", str(work)]
    pool = _analyze("pool", data, bench, tmp_path / "an", "--routers", "mlc-mlm", "--sizes", "2,3", *common,
                    "--router-cost", "bench/results/router_cost_engines_cpu.json")["summary"]["points"]
    by_size = {p["size"]: p for p in pool}
    assert by_size[3]["avg_mu_n"] == pytest.approx(rows["mlc-mlm"]["avg_mu_n"])   # the full pool is the run
    assert by_size[2]["pool"] == ["model-a", "model-b"]   # (its μn may be NaN: the fake data has ties)
    assert len(list((work / "pool2-0" / "decisions" / "mlc-mlm" / "seed0").glob("*.jsonl"))) == 5
    cost = json.loads(Path("bench/results/router_cost_engines_cpu.json").read_text())["results"]
    expected = next(r for r in cost if r["router"] == "mlc-mlm" and r["engine"] == "torch")
    assert by_size[3]["gflops"] == expected["gflops"]["3"] and by_size[3]["p50_ms"] == expected["p50_ms"]
    assert not (work / "pool3-0").exists() or not any((work / "pool3-0" / "decisions").rglob("*.jsonl"))

    eff = _analyze("efficiency", data, bench, tmp_path / "an", "--fractions", "0.5", *common)["summary"]
    assert [f for f, _, _ in eff["curves"]["lookahead-mlm"]] == [0.5, 1.0]
    assert eff["curves"]["lookahead-mlm"][-1][1] == pytest.approx(rows["lookahead-mlm"]["avg_mu_n"])
    assert eff["curves"]["lookahead-mlm-norm"][-1][1] == pytest.approx(rows["lookahead-mlm-norm"]["avg_mu_n"])
    settings = json.loads((work / "fraction0.5" / "decisions" / "lookahead-mlm" / "settings.json").read_text())
    assert settings["train_fraction"] == 0.5

    sweep = _analyze("sweep", data, bench, tmp_path / "an", "--grid", "m=4,8", "--grid", "rm_weight=0",
                     *common)["summary"]["curves"]
    assert sweep["m"][1][1] == pytest.approx(rows["lookahead-mlm"]["avg_mu_n"])          # m = 8: the run's value
    assert sweep["rm_weight"][0][1] == pytest.approx(rows["lookahead-mlm-norm"]["avg_mu_n"])  # λ = 0: the ablation
    assert any((work / "m-4" / "decisions" / "lookahead-mlm" / "seed0").glob("*.jsonl"))
    md = (tmp_path / "an" / "sweep" / "sweep.md").read_text()
    assert "not used for model selection" in md


def test_train_share_draws_the_fraction_per_source(fake_dataset):
    from lookahead_router.data.splits import make_folds
    from lookahead_router.evaluation.benchmark import _train_share
    fold = make_folds(fake_dataset, "cv", k=5, seed=0, add_train=True)[0]
    half = _train_share(fake_dataset, fold, 0.5, seed=0)
    source = fake_dataset.queries["source"].to_numpy()
    for s in dict.fromkeys(source[fold.train]):
        assert (source[half.train] == s).sum() == max(1, round(0.5 * (source[fold.train] == s).sum()))
    assert set(half.train) <= set(fold.train) and np.array_equal(half.test, fold.test)
    assert np.array_equal(_train_share(fake_dataset, fold, 0.5, seed=0).train, half.train)   # same rows per seed
