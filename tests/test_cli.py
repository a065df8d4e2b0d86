"""The command line's conventions: one flag vocabulary (old spellings kept as aliases), help for
every option, `--version`, a readable `lookahead routers`, and clear errors (exit status 2, the
bad value, the choices, a likely meant one) for input that used to select nothing silently."""

from __future__ import annotations

import json
from importlib.metadata import version

import click
import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from lookahead_router.cli.main import app
from lookahead_router.data.dataset import DatasetError, RoutingDataset
from lookahead_router.data.splits import Protocol, ProtocolError, make_folds, parse_protocol

runner = CliRunner()
CANDS = ["model-a", "model-b", "model-c"]


def small_dataset(n: int = 12) -> RoutingDataset:
    """Two sources (one named like a release benchmark, for the case-insensitive suggestions),
    train and test rows."""
    source = ["MT-Bench" if i % 2 else "GSM8K" for i in range(n)]
    queries = pd.DataFrame({"id": [f"{s}/{i}" for i, s in enumerate(source)], "source": source,
                            "split": ["test" if i < n // 2 else "train" for i in range(n)],
                            "prompt": [f"prompt {i}" for i in range(n)], "turns": [[f"prompt {i}"] for i in range(n)],
                            "payload": [{}] * n})
    responses = np.array([[f"{c} {i}" for c in CANDS] for i in range(n)], dtype=object)
    scores = np.random.default_rng(0).random((n, len(CANDS)))
    return RoutingDataset(CANDS, queries, responses, scores)


@pytest.fixture
def small_parquet(tmp_path):
    return str(small_dataset().save(tmp_path / "small.parquet"))


def command(*path: str) -> click.Command:
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


def parsed(path: tuple[str, ...], args: list[str]) -> dict:
    """The parameters a command's arguments parse into, without running it."""
    return command(*path).make_context(path[-1], args).params


def fails(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "No such option" not in result.output, result.output
    for needle in needles:
        assert needle in result.output, (needle, result.output)


# ---- the root: --version and help everywhere ---------------------------------------------------
def test_version_prints_the_installed_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"lookahead-router {version('lookahead-router')}"


def test_every_option_and_argument_of_every_command_has_help():
    missing = []

    def walk(cmd: click.Command, path: str) -> None:
        for param in cmd.params:
            if not (getattr(param, "help", None) or "").strip():
                missing.append(f"{path} {param.opts[0]}")
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")

    root = typer.main.get_command(app)
    walk(root, "lookahead")
    assert len(root.commands) >= 10   # the walk reached the subcommands
    assert not missing, f"options without help: {missing}"


# ---- `lookahead routers` ---------------------------------------------------------------------
def test_routers_lists_every_router_with_its_whole_description_and_no_markup(monkeypatch):
    from lookahead_router.routers.base import Router
    from lookahead_router.routers.registry import ROUTERS, Entry, make_router

    class Bracketed(Router):
        """Scores [n, T] with [bold]no[/bold] markup read, and a description long enough to
        wrap twice on a terminal of a hundred columns: every word of it must still be shown."""

    monkeypatch.setitem(ROUTERS, "zz-bracketed", Entry(Bracketed, "baseline"))
    result = runner.invoke(app, ["routers"], env={"COLUMNS": "100"})   # the console reads it at each print
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(map(len, lines)) <= 100
    flat = "".join(result.output.split())   # descriptions fold over lines: compare without spaces
    for name in ROUTERS:
        assert name in result.output
        assert "".join(make_router(name).summary().split()) in flat, name
    assert "[n,T]with[bold]no[/bold]markupread" in flat   # brackets shown as written
    assert "Training scores are never used" in result.output.replace("\n", " ") or \
        "Trainingscoresareneverused" in flat   # smoothie's docstring beyond its first line
    assert "``" not in result.output
    for kind in ("reference", "baseline", "lookahead", "ablation", "ceiling"):
        assert any(line.lstrip().startswith(kind) for line in lines), kind


# ---- one flag vocabulary: new names, old ones as aliases -----------------------------------------
@pytest.mark.parametrize("path, new, old, param", [
    (("route",), "--prompts", "--input", "input_file"),
    (("route",), "--out", "--output", "output"),
    (("calibrate",), "--decisions", "--scores", "scores"),
    (("collect", "generate"), "--config", "--models", "models_file"),
    (("collect", "generate"), "--candidates", "--model", "only"),
    (("collect", "score"), "--candidates", "--model", "only"),
    (("collect", "build"), "--candidates", "--models", "models"),
    (("collect", "prompts"), "--sources", "--source", "sources"),
    (("collect", "verify-release"), "--checks", "--check", "checks"),
])
def test_renamed_flags_and_their_old_spellings_set_the_same_option(path, new, old, param):
    option = next(p for p in command(*path).params if p.name == param)
    assert option.opts[0] == new and old in option.opts   # the new name first: help shows it first
    required = {"route": ["--prompts", "p", "--out", "o"], "calibrate": ["--data", "d", "--config", "c"],
                "generate": ["--prompts", "p", "--config", "c", "--out", "o"],
                "score": ["--dir", "d", "--prompts", "p", "--scorer", "math"],
                "build": ["--dir", "d", "--prompts", "p", "--out", "o"],
                "prompts": ["--data", "d", "--out", "o"], "verify-release": []}[path[-1]]
    for flag in (new, old):
        value = parsed(path, [*required, flag, "x"])[param]
        value = value[0] if isinstance(value, (list, tuple)) else value
        assert str(value) == "x", (flag, value)


def test_route_runs_with_the_new_and_the_old_flags(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "q1", "prompt": "hello"}\n')
    for args in (["--prompts", str(prompts), "--out", str(tmp_path / "d.jsonl")],
                 ["--input", str(prompts), "--output", str(tmp_path / "d.jsonl")]):
        result = runner.invoke(app, ["route", *args, "--router", str(tmp_path / "nowhere")])
        fails(result, "holds no saved router")   # parsed, read the prompts, then found no router


# ---- one protocol vocabulary ---------------------------------------------------------------------
def test_one_parser_reads_every_protocol_name():
    assert parse_protocol("cv5") == Protocol("cv", 5) and parse_protocol("CV10").name == "cv10"
    assert parse_protocol("cv") == Protocol("cv", 5) and parse_protocol("cv", 3).name == "cv3"
    assert parse_protocol("cv5", 5) == Protocol("cv", 5)
    assert parse_protocol("lobo") == Protocol("lobo") and parse_protocol("split").name == "split"
    with pytest.raises(ProtocolError, match="cv5 means 5 folds, but k=3"):
        parse_protocol("cv5", 3)
    with pytest.raises(ProtocolError, match="k >= 2"):
        parse_protocol("cv1")
    with pytest.raises(ProtocolError, match="kfold: no such protocol; protocols: cv5 .*lobo.*split"):
        parse_protocol("kfold")


def test_data_folds_and_benchmark_take_the_same_protocol_names(small_parquet, tmp_path):
    ds = RoutingDataset.load(small_parquet)
    new = runner.invoke(app, ["data", "folds", "--data", small_parquet, "--protocol", "cv3"])
    old = runner.invoke(app, ["data", "folds", "--data", small_parquet, "--protocol", "cv", "--k", "3"])
    assert new.exit_code == old.exit_code == 0, new.output + old.output
    assert new.output == old.output and new.output.count("fold") == 3
    assert len(make_folds(ds, "cv3")) == len(make_folds(ds, "cv", k=3)) == 3
    fails(runner.invoke(app, ["data", "folds", "--data", small_parquet, "--protocol", "cv7x"]),
          "cv7x: no such protocol")
    fails(runner.invoke(app, ["data", "folds", "--data", small_parquet, "--protocol", "cv5", "--k", "3"]),
          "cv5 means 5 folds")
    # benchmark reads the name with the same parser, before it reads the dataset or trains
    fails(runner.invoke(app, ["benchmark", "--data", str(tmp_path / "absent.parquet"), "--protocol", "cv7x",
                              "--preset", "smoke", "--out", str(tmp_path / "b")]), "cv7x: no such protocol")


# ---- values that select nothing ----------------------------------------------------------------
def test_dataset_selections_name_the_unknown_value_and_suggest_the_case():
    ds = small_dataset()
    with pytest.raises(DatasetError, match="MT-bench: no such source; did you mean MT-Bench\\? "
                                           "sources: GSM8K, MT-Bench"):
        ds.where(source="MT-bench")
    with pytest.raises(DatasetError, match="no such splits: tset \\(did you mean test\\?\\), dev; splits: "):
        ds.where(split=["tset", "dev", "train"])
    with pytest.raises(DatasetError, match="Model-A: no such candidate; did you mean model-a\\?"):
        ds.select_candidates(["Model-A", "model-b"])
    assert len(ds.where(source="MT-Bench", split="test")) == 3   # the valid ones still select


@pytest.mark.parametrize("args, message", [
    (["--sources", "MT-bench"], "MT-bench: no such source; did you mean MT-Bench? sources: GSM8K, MT-Bench"),
    (["--splits", "Train"], "Train: no such split; did you mean train?"),
    (["--candidates", "model-a,Model-B"], "Model-B: no such candidate; did you mean model-b?"),
    (["--validation-split", "dev"], "dev: no such split; splits: "),
])
def test_train_refuses_selections_that_match_nothing_before_training(small_parquet, tmp_path, args, message):
    result = runner.invoke(app, ["train", "--router", "knn", "--data", small_parquet,
                                 "--out", str(tmp_path / "r"), *args])
    fails(result, message)
    assert "training" not in result.output and not (tmp_path / "r").exists()


def test_other_commands_share_the_dataset_checks(small_parquet, tmp_path):
    fails(runner.invoke(app, ["collect", "prompts", "--data", small_parquet, "--sources", "gsm8k",
                              "--out", str(tmp_path / "p.jsonl")]), "gsm8k: no such source; did you mean GSM8K?")
    fails(runner.invoke(app, ["decide", "--data", small_parquet, "--router", "Oracle",
                              "--out", str(tmp_path / "d.jsonl")]), "Oracle: no such router; did you mean oracle?")


def test_eval_refuses_decisions_for_queries_the_dataset_lacks(fake_dataset, tmp_path):
    data = str(fake_dataset.save(tmp_path / "ds.parquet"))
    gsm = [q for q in fake_dataset.ids if q.startswith("GSM8K/")]
    subset = tmp_path / "subset.jsonl"   # one benchmark's queries only (a test fold): legitimate
    subset.write_text("".join(json.dumps({"id": q, "model": "model-a"}) + "\n" for q in gsm))
    ok = runner.invoke(app, ["eval", "--data", data, "--benchmarks", "GSM8K", "--decisions", str(subset),
                             "--format", "json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["rows"]["subset"]["GSM8K"]["mu_o"] is not None
    # wrongly cased ids used to be dropped without a word, and the run exit 0
    cased = tmp_path / "cased.jsonl"
    cased.write_text("".join(json.dumps({"id": q.lower(), "model": "model-a"}) + "\n" for q in gsm)
                     + json.dumps({"id": "nowhere/1", "model": "model-a"}) + "\n")
    fails(runner.invoke(app, ["eval", "--data", data, "--decisions", str(cased)]),
          f"{cased}: {len(gsm) + 1} of {len(gsm) + 1} ids are not queries of the dataset",
          f"e.g. 'gsm8k/0' (did you mean 'GSM8K/0'?)")
    model = tmp_path / "model.jsonl"
    model.write_text(json.dumps({"id": gsm[0], "model": "Model-A"}) + "\n")
    fails(runner.invoke(app, ["eval", "--data", data, "--decisions", str(model)]),
          "Model-A: no such candidate; did you mean model-a? candidates: model-a, model-b, model-c")
    fails(runner.invoke(app, ["eval", "--data", data, "--benchmarks", "gsm8k"]),
          "gsm8k: no such benchmark; did you mean GSM8K?")


def test_calibrate_refuses_score_ids_the_dataset_lacks(fake_dataset, tmp_path):
    from lookahead_router.evaluation.calibration import calibrate
    from lookahead_router.routers.cost import Price
    scores = {c: 0.5 for c in fake_dataset.candidates}
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"id": "gsm8k/0", "model": "model-a", "scores": scores}) + "\n")
    prices = {c: Price(1.0, 1.0) for c in fake_dataset.candidates}
    with pytest.raises(ValueError, match="1 of 1 ids are not queries of the dataset, e.g. 'gsm8k/0' "
                                         "\\(did you mean 'GSM8K/0'\\?\\)"):
        calibrate(fake_dataset, prices, score_files=[path], target_cost=1.0)


# ---- router options -------------------------------------------------------------------------------
@pytest.mark.parametrize("router, pair, message", [
    ("knn", "k=abc", "--set k=abc: knn: option k must be a whole number, got 'abc'"),
    ("mlc-mlm", "epochs=abc", "--set epochs=abc: mlc-mlm: option epochs must be a number, got 'abc'"),
    ("lookahead-mlm", "finetune=maybe", "--set finetune=maybe: lookahead-mlm: option finetune must be true or false"),
    ("knn", "batchsize=8", "--set batchsize=8: knn: unknown option(s) ['batchsize'] (did you mean batch_size?); "
                           "known: ['backbone', 'batch_size', 'k', 'max_length', 'progress']"),
    ("mlc-mlm", "epoch=2", "--set epoch=2: mlc-mlm: unknown option(s) ['epoch'] (did you mean epochs?)"),
])
def test_train_set_errors_name_the_flag_the_value_and_the_type(tmp_path, router, pair, message):
    # checked before the dataset is read: the path need not exist
    result = runner.invoke(app, ["train", "--router", router, "--data", str(tmp_path / "absent.parquet"),
                                 "--out", str(tmp_path / "r"), "--set", pair])
    fails(result, message)
    assert "invalid literal" not in result.output


def test_benchmark_set_and_seeds_errors_come_before_any_work(tmp_path):
    base = ["benchmark", "--data", str(tmp_path / "absent.parquet"), "--preset", "smoke", "--routers", "knn,mlc-mlm",
            "--out", str(tmp_path / "b")]
    fails(runner.invoke(app, [*base, "--set", "knn.k=abc"]),
          "--set knn.k=abc: knn: option k must be a whole number, got 'abc'")
    fails(runner.invoke(app, [*base, "--set", "mlm.epochs=two"]),   # a preset group's option
          "--set mlm.epochs=two: mlc-mlm: option epochs must be a number")
    fails(runner.invoke(app, [*base, "--set", "knnn.k=5"]),   # matched nothing: it used to change nothing
          "--set knnn.k=5: knnn: no such router or preset group in this run; did you mean knn?")
    fails(runner.invoke(app, [*base, "--seeds", "0,one"]), "--seeds: 'one' is not a whole number")
    assert not (tmp_path / "b").exists()


def test_unknown_router_and_preset_names_suggest_the_meant_one(tmp_path):
    base = ["train", "--data", str(tmp_path / "absent.parquet"), "--out", str(tmp_path / "r")]
    fails(runner.invoke(app, [*base, "--router", "KNN"]), "KNN: no such router; did you mean knn? routers: ")
    fails(runner.invoke(app, [*base, "--router", "knn", "--preset", "CPU"]),
          "unknown preset 'CPU' (did you mean cpu?); choose from cpu, gpu, smoke")
    # brackets in a message are the user's text, not markup
    fails(runner.invoke(app, [*base, "--router", "[bold]x"]), "[bold]x: no such router")


def test_analyze_number_lists_name_their_option(tmp_path):
    fails(runner.invoke(app, ["analyze", "efficiency", "--bench", str(tmp_path), "--fractions", "0.5,half"]),
          "--fractions: 'half' is not a number")


def test_router_options_and_train_flags_come_from_the_configs():
    """`routers --options` and `train`'s router flags are generated from the Config dataclasses:
    an option of the training engine (warmup_ratio) appears in both with its help text."""
    from lookahead_router.training.engine import TrainConfig
    help_text = TrainConfig.__dataclass_fields__["warmup_ratio"].metadata["help"]
    listed = runner.invoke(app, ["routers", "--options", "mlc-mlm", "knn"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert "MLCEncoder" not in listed.output and "mlc-mlm (ClassifierConfig)" in listed.output
    assert "warmup_ratio" in listed.output and " ".join(help_text.split()[:4]) in " ".join(listed.output.split())
    assert "knn (KNNConfig)" in listed.output and " k " in listed.output
    flags = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert "--warmup-ratio" in flags.output and "--finetune" in flags.output and "--frozen" in flags.output
    fails(runner.invoke(app, ["routers", "knnn"]), "knnn")
