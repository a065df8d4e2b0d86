"""`lookahead benchmark --preset smoke` end to end, `lookahead train` (also under
`accelerate launch` with 2 CPU processes), and the errors a user can run into."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lookahead_router.cli.main import app
from lookahead_router.evaluation.benchmark import BASELINES, CEILINGS, LOOKAHEAD, MLM_ABLATIONS, TASK_BEST, run_benchmark
from lookahead_router.evaluation.presets import load_preset
from lookahead_router.routers.base import Router

runner = CliRunner()


@pytest.fixture
def fake_parquet(fake_dataset, tmp_path) -> Path:
    return fake_dataset.save(tmp_path / "fake.parquet")


def test_smoke_benchmark_trains_every_router_over_seeds_and_writes_the_report(fake_dataset, fake_parquet, tmp_path):
    out = tmp_path / "bench"
    result = runner.invoke(app, ["benchmark", "--data", str(fake_parquet), "--preset", "smoke",
                                 "--protocol", "cv5", "--seeds", "0,1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    for name in BASELINES + LOOKAHEAD + CEILINGS + (TASK_BEST, "random", "oracle", "model-a"):
        assert name in report["rows"], name
        assert np.isfinite(report["rows"][name]["avg_mu_n"])
    assert report["rows"]["oracle"]["avg_mu_n"] == pytest.approx(100.0)
    assert "avg_mu_n_std" not in report["rows"]["oracle"]
    assert report["run"]["seeds"] == [0, 1] and report["seeds"] == 2
    assert report["run"]["preset"] == "smoke" and len(report["run"]["folds"]) == 5
    assert set(report["run"]["labels"].values()) == {"relative"}
    # the figures name the precision and the CPU they were computed with
    from lookahead_router.precision import cpu_flags, resolve_precision
    assert report["run"]["precision"] == resolve_precision() and report["run"]["cpu_flags"] == cpu_flags()
    assert report["run"]["precision_setting"] in ("auto", "fp32", "bf16")
    pairs = {(c["a"], c["b"]) for c in report["comparisons"]}
    assert {("lookahead-mlm", "lookahead-mlm-norm"), ("lookahead-mlm", TASK_BEST),
            ("lookahead-clm", "lookahead-clm-norm"), ("lookahead-mlm", "mlc-mlm")} <= pairs
    for c in report["comparisons"]:
        assert c["ci95"][0] <= c["ci95"][1]
    md = (out / "report.md").read_text()
    results, training = md.split("## Training")
    assert results.count("| knn |") == 1 and "Paired comparisons" in md and "benchmark label" in md
    assert (out / "mu_n.png").stat().st_size > 1000
    # per router its fit time; per neural router and fold the validation curve, plotted
    assert training.count("| knn |") == 1 and training.count("| lookahead-mlm |") == 1
    fold = report["run"]["timings"]["lookahead-mlm"]["folds"]["seed0/fold0"]
    assert fold["curve"] and fold["best_step"] in [step for step, _ in fold["curve"]]
    assert max(v for _, v in fold["curve"]) == pytest.approx(
        max(v for s, v in fold["curve"] if s == fold["best_step"]))
    assert (out / "curves.png").stat().st_size > 1000
    # Lookahead-MLM is compared with every other row, the deployable references included
    assert {("lookahead-mlm", r) for r in ("linear", "domain", "knn", "ceiling-full")} <= pairs
    # and the full-response ceiling with linear (it reads the real responses, so should beat it)
    assert ("ceiling-full", "linear") in pairs
    # every benchmark query is decided exactly once per seed, out of fold
    for seed in (0, 1):
        ids = [json.loads(line)["id"] for f in sorted((out / "decisions" / "knn" / f"seed{seed}").glob("*.jsonl"))
               for line in f.read_text().splitlines()]
        assert len(ids) == len(set(ids)) == len(fake_dataset.where(split="test"))
    # a second run reuses the finished (router, seed, fold) decisions and gives the same table
    again = runner.invoke(app, ["benchmark", "--data", str(fake_parquet), "--preset", "smoke",
                                "--routers", "knn,mlc-mlm", "--seeds", "0,1", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "reusing" in again.output
    rerun = json.loads((out / "report.json").read_text())
    assert rerun["rows"]["mlc-mlm"] == report["rows"]["mlc-mlm"]
    reused = rerun["run"]["timings"]["mlc-mlm"]  # the first run's timings come back with its decisions
    assert reused["fit_s"] == report["run"]["timings"]["mlc-mlm"]["fit_s"] > 0
    assert all(f["reused"] for f in reused["folds"].values())
    # ... but never decisions made with other settings
    other = runner.invoke(app, ["benchmark", "--data", str(fake_parquet), "--preset", "smoke",
                                "--routers", "knn", "--set", "knn.k=3", "--out", str(out)])
    assert other.exit_code == 2 and "other settings" in other.output
    # ... nor decisions made in another precision: the message says which setting differs
    flip = "fp32" if report["run"]["precision"] == "bf16" else "bf16"
    other = runner.invoke(app, ["--precision", flip, "benchmark", "--data", str(fake_parquet), "--preset", "smoke",
                                "--routers", "knn", "--out", str(out)])
    assert other.exit_code == 2 and f"precision: '{report['run']['precision']}' there, '{flip}' now" in other.output


def test_benchmark_bad_input(fake_dataset, fake_parquet, tmp_path):
    bad = runner.invoke(app, ["benchmark", "--data", str(fake_parquet), "--preset", "smoke",
                              "--routers", "knn,nope", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "nope: no such router" in bad.output
    bad = runner.invoke(app, ["benchmark", "--data", str(fake_parquet), "--preset", "laptop",
                              "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "unknown preset 'laptop'" in bad.output
    one = fake_dataset.select_candidates(["model-a"])
    with pytest.raises(ValueError, match="at least two candidates"):
        run_benchmark(one, ["knn"], preset="smoke", out_dir=tmp_path / "one", progress=False)
    # lobo on a dataset with a single benchmark has no fold to train on
    gsm = fake_dataset.where(source="GSM8K")
    with pytest.raises(ValueError, match="at least two test benchmarks"):
        run_benchmark(gsm, ["knn"], protocol="lobo", preset="smoke", out_dir=tmp_path / "g",
                      add_train=False, progress=False)
    # the split protocol with no training rows: an empty training fold
    with pytest.raises(ValueError, match="split protocol needs rows"):
        run_benchmark(fake_dataset.where(split="test"), ["knn"], protocol="split", preset="smoke",
                      out_dir=tmp_path / "s", progress=False)


def test_train_cli_saves_a_router_that_loads(fake_parquet, tmp_path):
    out = tmp_path / "router"
    result = runner.invoke(app, ["train", "--router", "zooter-mlm", "--data", str(fake_parquet),
                                 "--out", str(out), "--backbone", "tiny-bert", "--epochs", "1",
                                 "--batch-size", "8", "--eval-every", "2", "--set", "hidden=16"])
    assert result.exit_code == 0, result.output
    assert "best checkpoint: step" in result.output and "validation average μn" in result.output
    router = Router.load(out)
    assert router.name == "zooter-mlm" and router.config.hidden == 16
    assert router.score(["a prompt"]).shape == (1, 3)
    # SelfOSS's own validation rows choose the checkpoint; only its training rows train
    selfoss = runner.invoke(app, ["train", "--router", "mlc-clm", "--data", str(fake_parquet),
                                  "--out", str(tmp_path / "selfoss"), "--backbone", "tiny-llama",
                                  "--splits", "train", "--validation-split", "validation", "--epochs", "1"])
    assert selfoss.exit_code == 0, selfoss.output
    assert "on 8 rows" in selfoss.output
    bad = runner.invoke(app, ["train", "--router", "mlc-mlm", "--data", str(fake_parquet),
                              "--out", str(tmp_path / "x"), "--validation-split", "dev"])
    assert bad.exit_code == 2 and "dev: no such split; splits: " in bad.output
    bad = runner.invoke(app, ["train", "--router", "mlc-mlm", "--data", str(fake_parquet),
                              "--out", str(tmp_path / "x"), "--candidates", "model-a"])
    assert bad.exit_code == 2 and "at least two candidates" in bad.output
    bad = runner.invoke(app, ["train", "--router", "mlc-mlm", "--data", str(tmp_path / "none.parquet"),
                              "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "none.parquet" in bad.output


def test_train_cli_trains_the_deployable_references(fake_parquet, tmp_path):
    result = runner.invoke(app, ["train", "--router", "domain", "--data", str(fake_parquet), "--out",
                                 str(tmp_path / "domain"), "--backbone", "tiny-bert", "--balance", "sources",
                                 "--set", "cv_folds=2"])
    assert result.exit_code == 0, result.output
    assert "chosen by cross-validated average μn" in result.output and "balance=sources" in result.output
    assert Router.load(tmp_path / "domain").chosen["balance"] == "sources"
    bad = runner.invoke(app, ["train", "--router", "linear", "--data", str(fake_parquet), "--out",
                              str(tmp_path / "x"), "--backbone", "tiny-bert", "--patience", "2"])
    assert bad.exit_code == 2 and "unknown option(s) ['patience']" in bad.output


def _train_args(data: Path, out: Path) -> list[str]:
    return ["train", "--router", "mlc-mlm", "--data", str(data), "--out", str(out), "--backbone",
            "tiny-bert", "--finetune", "--epochs", "2", "--batch-size", "4", "--eval-every", "3",
            "--max-length", "32"]


@pytest.mark.skipif(shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None,
                    reason="accelerate's launcher is not installed")
def test_training_runs_under_accelerate_launch_with_two_cpu_processes(fake_parquet, tmp_path):
    single = runner.invoke(app, _train_args(fake_parquet, tmp_path / "one"))
    assert single.exit_code == 0, single.output
    launcher = str(Path(sys.executable).parent / "accelerate")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "lookahead_router.cli.main",
                           *_train_args(fake_parquet, tmp_path / "two")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = {}
    for name in ("one", "two"):
        training = json.loads((tmp_path / name / "router.json").read_text())["extra"]["training"]
        steps[name] = training["steps"]
    # each process sees half of every epoch: half the optimizer steps of the single process
    assert steps["two"] * 2 == pytest.approx(steps["one"], abs=2)
    assert Router.load(tmp_path / "two").score(["x"]).shape == (1, 3)


def test_routers_command_lists_every_baseline():
    result = runner.invoke(app, ["routers"])
    assert result.exit_code == 0
    for name in BASELINES + LOOKAHEAD + MLM_ABLATIONS:
        assert name in result.output
    cpu = load_preset("cpu")
    assert cpu.options("mlc-clm")["backbone"] == "smollm2"
    # an ablation takes its variant's preset options
    assert cpu.options("lookahead-mlm-start") == cpu.options("lookahead-mlm")
    assert cpu.group("lookahead-clm-norm") == "lookahead-clm" and cpu.group("mlc-mlm") == "mlm"
    assert cpu.options("routerdc-mlm")["backbone"] == "minilm"
    # equal budgets: the query-only classifiers get Lookahead's prompt length, trainable part and epochs
    for key in ("backbone", "max_length", "layers", "epochs", "lr", "batch_size", "eval_every"):
        assert cpu.options("mlc-mlm")[key] == cpu.options("lookahead-mlm")[key], key
        assert cpu.options("mlc-clm")[key] == cpu.options("lookahead-clm")[key], key
    with pytest.raises(ValueError, match="unknown preset 'laptop'"):
        load_preset("laptop")


def test_gpu_preset_falls_back_to_the_packaged_backbones_offline(monkeypatch):
    """The paper's backbones where a hub is reachable, the packaged ones otherwise."""
    from lookahead_router.evaluation import presets
    from lookahead_router.routers import backbones
    presets.resolve_backbone.cache_clear()

    def offline(spec, kind):
        if "/" in spec:
            raise backbones.RouterError(f"cannot read the config of backbone {spec!r}: offline")
        return None
    monkeypatch.setattr(backbones, "backbone_config", offline)
    monkeypatch.setattr(presets, "_hub_reachable", lambda: True)   # reachable, but the ids fail
    gpu = load_preset("gpu")
    assert gpu.options("lookahead-mlm")["backbone"] == "minilm"
    assert gpu.options("lookahead-clm")["backbone"] == "smollm2"
    monkeypatch.setattr(backbones, "backbone_config", lambda spec, kind: None)
    presets.resolve_backbone.cache_clear()
    assert load_preset("gpu").options("mlc-mlm")["backbone"] == "answerdotai/ModernBERT-base"
    # no network and nothing in the local cache: the offline default, without asking the hub
    monkeypatch.setattr(presets, "_hub_reachable", lambda: False)
    presets.resolve_backbone.cache_clear()
    assert load_preset("gpu").options("mlc-mlm")["backbone"] == "minilm"
    presets.resolve_backbone.cache_clear()


def test_train_keeps_the_datasets_label_threshold_in_router_json(fake_dataset, tmp_path):
    """`collect build --threshold` records the label threshold in the dataset; `train` makes it the
    router's option, so a saved and reloaded router still knows it (and `--set threshold` wins)."""
    fake_dataset.metadata["label_threshold"] = 0.5
    data = fake_dataset.save(tmp_path / "thr.parquet")
    args = ["train", "--router", "mlc-mlm", "--data", str(data), "--backbone", "tiny-bert", "--epochs", "1",
            "--batch-size", "8", "--eval-every", "2", "--max-length", "16"]
    result = runner.invoke(app, args + ["--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "r" / "router.json").read_text())
    assert saved["config"]["threshold"] == 0.5
    assert Router.load(tmp_path / "r").config.threshold == 0.5
    result = runner.invoke(app, args + ["--out", str(tmp_path / "s"), "--set", "threshold=0.9"])
    assert result.exit_code == 0, result.output
    assert Router.load(tmp_path / "s").config.threshold == 0.9
