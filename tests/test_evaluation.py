import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lookahead_router.cli.main import app
from lookahead_router.evaluation.decisions import (Decisions, DecisionsError, fixed_decisions,
                                                    oracle_decisions, random_decisions)
from lookahead_router.evaluation.report import evaluate

runner = CliRunner()


def test_report_rows_and_decisions_agree(fake_dataset):
    decisions = [oracle_decisions(fake_dataset), fixed_decisions(fake_dataset, "model-b")]
    decisions[0].name, decisions[1].name = "my-oracle", "always-b"
    report = evaluate(fake_dataset, decisions=decisions)
    assert report.benchmarks == ["AlpacaEval", "ArenaHard", "MT-Bench", "GSM8K", "MATH", "HumanEval", "MBPP"]
    for b in report.benchmarks:
        assert report.rows["my-oracle"][b]["mu_o"] == pytest.approx(report.rows["oracle"][b]["mu_o"])
        assert report.rows["always-b"][b] == pytest.approx(report.rows["model-b"][b])
        assert report.rows["oracle"][b]["mu_n"] == 100 and report.rows["random"][b]["mu_n"] == 0
        cands = [report.rows[c][b]["mu_o"] for c in fake_dataset.candidates]
        assert report.rows["random"][b]["mu_o"] == pytest.approx(np.mean(cands))
    as_json = report.to_dict()
    assert set(as_json["rows"]["oracle"]) == set(report.benchmarks) | {"avg_mu_n"}
    assert as_json["rows"]["oracle"]["avg_mu_n"] == 100
    assert as_json["alpaca_lc_method"] == "offline"


def test_partial_decisions_score_covered_queries_only(fake_dataset):
    gsm = fake_dataset.where(source="GSM8K")
    partial = Decisions("half", gsm.ids[:5], ["model-a"] * 5)
    report = evaluate(fake_dataset, routers=["random", "oracle"], decisions=[partial])
    assert report.benchmarks == ["GSM8K"] and report.queries == {"GSM8K": 5}
    assert any("no decisions" in n for n in report.notes)


def test_decisions_file_round_trip_and_errors(fake_dataset, tmp_path):
    d = Decisions("x", ["GSM8K/0", "GSM8K/1"], ["model-a", "model-c"], [{"model-a": 0.9}, None])
    path = d.save(tmp_path / "x.jsonl")
    back = Decisions.load(path)
    assert back.ids == d.ids and back.models == d.models and back.scores == d.scores
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "GSM8K/0", "model": "model-a"}\n{"id": "GSM8K/1"\n')
    with pytest.raises(DecisionsError, match=r"bad.jsonl:2"):
        Decisions.load(bad)
    bad.write_text('{"id": "GSM8K/0", "model": "model-a"}\n{"id": "GSM8K/0", "model": "model-b"}\n')
    with pytest.raises(DecisionsError, match="duplicate id"):
        Decisions.load(bad)
    for depth in (65, 100_000):   # past the nesting limit; past Python's recursion limit
        bad.write_text('{"id": "GSM8K/0", "model": "model-a", "scores": ' + "[" * depth + "]" * depth + "}\n")
        with pytest.raises(DecisionsError, match=r"bad.jsonl:1: 'scores' nests arrays or objects more than 64"):
            Decisions.load(bad)
    with pytest.raises(DecisionsError, match="gpt-9: no such candidate"):
        Decisions("y", ["GSM8K/0"], ["gpt-9"]).choice_for(fake_dataset)


def test_cli_eval_formats(fake_dataset, tmp_path):
    data = fake_dataset.save(tmp_path / "ds.parquet")
    dec = oracle_decisions(fake_dataset).save(tmp_path / "mine.jsonl")
    result = runner.invoke(app, ["eval", "--data", str(data), "--decisions", str(dec), "--format", "json",
                                 "--routers", "random,oracle"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert set(rows) == {"random", "oracle", "mine"}
    assert rows["mine"]["avg_mu_n"] == pytest.approx(100)
    md = runner.invoke(app, ["eval", "--data", str(data), "--format", "markdown"])
    assert md.exit_code == 0 and md.stdout.startswith("| Method | AlpacaEval μo")
    table = runner.invoke(app, ["eval", "--data", str(data), "--out", str(tmp_path / "r.json")])
    assert table.exit_code == 0 and "oracle" in table.output and (tmp_path / "r.json").exists()
    bad = runner.invoke(app, ["eval", "--data", str(data), "--routers", "gpt-9"])
    assert bad.exit_code == 2 and "no such reference router" in bad.output
    stranger = tmp_path / "stranger.jsonl"
    stranger.write_text('{"id": "GSM8K/0", "model": "gpt-9"}\n')
    unknown = runner.invoke(app, ["eval", "--data", str(data), "--decisions", str(stranger)])
    assert unknown.exit_code == 2 and "gpt-9" in unknown.output and "no such candidate" in unknown.output
    missing = runner.invoke(app, ["eval", "--data", str(tmp_path / "nope.parquet")])
    assert missing.exit_code == 2 and "no such routing dataset" in missing.output


def test_random_decisions_are_seeded_and_use_answering_candidates(fake_dataset):
    ds = fake_dataset.subset(range(20))
    ds.scores[0, :2] = float("nan")  # only model-c answered query 0
    a, b = random_decisions(ds, seed=1), random_decisions(ds, seed=1)
    assert a.models == b.models and a.models[0] == "model-c"
    assert len(set(random_decisions(ds, seed=1).models)) > 1
    assert a.models != random_decisions(ds, seed=2).models


def test_cli_decide_writes_evaluable_reference_decisions(fake_dataset, tmp_path):
    data = fake_dataset.save(tmp_path / "ds.parquet")
    for router in ("oracle", "random", "model-a"):
        result = runner.invoke(app, ["decide", "--data", str(data), "--router", router,
                                     "--out", str(tmp_path / f"{router}.jsonl")])
        assert result.exit_code == 0, result.output
    report = runner.invoke(app, ["eval", "--data", str(data), "--routers", "model-a,oracle", "--format", "json",
                                 "--decisions", str(tmp_path / "oracle.jsonl"),
                                 "--decisions", str(tmp_path / "model-a.jsonl")])
    assert report.exit_code == 2 and "share a name" in report.output  # file stems clash with rows
    (tmp_path / "oracle.jsonl").rename(tmp_path / "saved-oracle.jsonl")
    report = runner.invoke(app, ["eval", "--data", str(data), "--routers", "oracle", "--format", "json",
                                 "--decisions", str(tmp_path / "saved-oracle.jsonl")])
    rows = json.loads(report.stdout)["rows"]
    assert rows["saved-oracle"]["avg_mu_n"] == pytest.approx(rows["oracle"]["avg_mu_n"])
    bad = runner.invoke(app, ["decide", "--data", str(data), "--router", "gpt-9", "--out", str(tmp_path / "x.jsonl")])
    assert bad.exit_code == 2 and "gpt-9: no such router" in bad.output
