"""`lookahead route` (batch routing, resume) and `lookahead calibrate` (choosing the cost weight),
with a keyword router: its scores are obvious, so the expected decisions are too."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lookahead_router.cli.main import app
from lookahead_router.evaluation.calibration import CalibrationError, Sweep, calibrate, parse_share
from lookahead_router.evaluation.decisions import Decisions
from lookahead_router.evaluation.offline_route import read_prompts, route_file
from lookahead_router.prompts import prompt_of
from lookahead_router.routers.base import Router
from lookahead_router.routers.cost import Price
from lookahead_router.routers.registry import ROUTERS, Entry

runner = CliRunner()
PRICES = {"model-a": Price(10.0, 10.0, 100), "model-b": Price(1.0, 1.0, 100),
          "model-c": Price(0.1, 0.1, 100)}
CONFIG = """cost_weight: {w}
models:
  model-a: {{base_url: http://a/v1, price_input: 10, price_output: 10, expected_output_tokens: 100}}
  model-b: {{base_url: http://b/v1, price_input: 1, price_output: 1, expected_output_tokens: 100}}
  model-c: {{base_url: http://c/v1, price_input: 0.1, price_output: 0.1, expected_output_tokens: 100}}
"""


class KeywordRouter(Router):
    """Maths ("problem", "solve") -> model-a, code ("task", "python") -> model-c, else model-b by a
    small margin; a per-prompt wobble keeps scores distinct."""
    name = "test-keyword"

    def _score(self, prompts):
        out = []
        for p in prompts:
            wobble = (sum(map(ord, p)) % 7) / 100
            if "problem" in p or "solve" in p:
                out.append([0.9, 0.3, 0.1 + wobble])
            elif "task" in p or "python" in p:
                out.append([0.2, 0.3, 0.8 + wobble])
            else:
                out.append([0.5, 0.55 + wobble, 0.4])
        return np.array(out)


@pytest.fixture
def router_dir(tmp_path, monkeypatch):
    monkeypatch.setitem(ROUTERS, KeywordRouter.name, Entry(KeywordRouter, "reference"))   # this test only
    router = KeywordRouter()
    router.candidates = ["model-a", "model-b", "model-c"]
    return router.save(tmp_path / "router")


def route(*args):
    return runner.invoke(app, ["route", "--no-progress", *map(str, args)])


def write_lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_route_dataset_is_evaluable_and_resumes_byte_identically(fake_dataset, router_dir, tmp_path):
    data = fake_dataset.save(tmp_path / "ds.parquet")
    full = tmp_path / "full.jsonl"
    result = route("--router", router_dir, "--prompts", data, "--out", full, "--batch-size", 8)
    assert result.exit_code == 0, result.output
    assert f"0 already in {full}" in result.output.replace("\n", "")
    decisions = Decisions.load(full)
    assert decisions.ids == fake_dataset.ids
    assert decisions.models[fake_dataset.ids.index("GSM8K/0")] == "model-a"
    assert decisions.models[fake_dataset.ids.index("MBPP/0")] == "model-c"
    report = runner.invoke(app, ["eval", "--data", str(data), "--decisions", str(full), "--format", "json",
                                 "--routers", "random,oracle"])
    assert report.exit_code == 0, report.output
    assert json.loads(report.stdout)["rows"]["full"]["avg_mu_n"] > 0

    # A crash mid-write leaves a torn last line: the re-run drops it and appends the rest.
    original = full.read_bytes()
    cut = original.index(b"\n", len(original) // 2) + 20
    part = tmp_path / "part.jsonl"
    part.write_bytes(original[:cut])
    done_before = original[:cut].count(b"\n")
    result = route("--router", router_dir, "--prompts", data, "--out", part, "--batch-size", 8)
    assert result.exit_code == 0, result.output
    assert "partial last line" in result.output
    assert f"{done_before} already in" in result.output.replace("\n", "")
    assert part.read_bytes() == original
    # Nothing left to do: the file is unchanged.
    again = route("--router", router_dir, "--prompts", data, "--out", part)
    assert again.exit_code == 0 and f"{len(fake_dataset)} already in" in again.output.replace("\n", "")
    assert part.read_bytes() == original


def test_crash_inside_a_run_loses_at_most_the_batch(router_dir, tmp_path):
    router = Router.load(router_dir)
    inp = write_lines(tmp_path / "p.jsonl", [{"id": f"q{i}", "prompt": f"prompt {i}"} for i in range(10)])
    records = read_prompts(inp)
    out = tmp_path / "out.jsonl"
    route_file(router, records, tmp_path / "ref.jsonl", batch_size=3, progress=False)

    def crash(written):
        if written >= 6:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        route_file(router, records, out, batch_size=3, progress=False, on_batch=crash)
    assert out.read_text().count("\n") == 6
    summary = route_file(router, records, out, batch_size=3, progress=False)
    assert (summary.skipped, summary.written) == (6, 4)
    assert out.read_bytes() == (tmp_path / "ref.jsonl").read_bytes()
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == [f"q{i}" for i in range(10)]


@pytest.mark.parametrize("line, message", [
    ('{"id": "x", "prompt": "a"', "malformed JSON"),
    ('{"id": "x"}', "no 'prompt' or 'messages'"),
    ('{"id": "x", "messages": [{"role": "system", "content": "hi"}]}', "no user message"),
    ('{"id": "q0", "prompt": "again"}', "duplicate id 'q0'"),
    ('{"id": "x", "prompt": 3}', "'prompt' must be a string"),
    # nested past the limit (900 levels), and past the standard library's recursion limit
    ('{"id": "x", "prompt": "a", "meta": ' + "[" * 900 + "]" * 900 + "}", "'meta' nests arrays or objects "
     "more than 64 levels deep"),
    ('{"id": "x", "messages": ' + '[{"c": ' * 50_000 + "1" + "}]" * 50_000 + "}", "'messages' nests"),
])
def test_malformed_input_names_file_and_line_and_leaves_output_alone(router_dir, tmp_path, line, message):
    inp = write_lines(tmp_path / "bad.jsonl", ['{"id": "q0", "prompt": "fine"}', "", line])
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "q0", "model": "model-b", "scores": {"model-a": 0.1, "model-b": 0.2, '
                   '"model-c": 0.1}}\n{"id": "q')
    before = out.read_bytes()
    result = route("--router", router_dir, "--prompts", inp, "--out", out)
    assert result.exit_code == 2
    assert "bad.jsonl:3" in result.output and message in result.output, result.output
    assert out.read_bytes() == before


def test_output_from_other_prompts_is_refused(router_dir, tmp_path):
    inp = write_lines(tmp_path / "p.jsonl", [{"prompt": "hello"}, {"prompt": "world"}])
    out = write_lines(tmp_path / "out.jsonl", [{"id": "GSM8K/3", "model": "model-a"}])
    result = route("--router", router_dir, "--prompts", inp, "--out", out)
    assert result.exit_code == 2 and "out.jsonl:1" in result.output and "not in the input" in result.output
    assert out.read_text() == '{"id": "GSM8K/3", "model": "model-a"}\n'


def test_messages_route_on_the_last_user_message(router_dir, tmp_path):
    conversation = [{"role": "user", "content": "solve this problem"},
                    {"role": "assistant", "content": "x = 3"},
                    {"role": "user", "content": [{"type": "text", "text": "now write python"},
                                                 {"type": "image_url", "image_url": {"url": "u"}},
                                                 {"type": "text", "text": "for it"}]},
                    {"role": "assistant", "content": "..."}]
    assert prompt_of(conversation) == "now write python\nfor it"
    with pytest.raises(ValueError, match="no user message"):
        prompt_of([{"role": "assistant", "content": "hi"}])
    with pytest.raises(ValueError, match=r"messages\[0\]"):
        prompt_of([{"role": "user", "content": 5}])
    inp = write_lines(tmp_path / "chat.jsonl", [{"messages": conversation}, {"id": 7, "prompt": "solve it"}])
    out = tmp_path / "out.jsonl"
    assert route("--router", router_dir, "--prompts", inp, "--out", out).exit_code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["model"]) for r in rows] == [("1", "model-c"), ("7", "model-a")]
    assert set(rows[0]["scores"]) == {"model-a", "model-b", "model-c"}


def test_cost_weight_shifts_decisions_to_the_cheap_model(router_dir, tmp_path):
    inp = write_lines(tmp_path / "p.jsonl", [{"prompt": f"tell me about topic {i}"} for i in range(6)])
    free, cheap = tmp_path / "free.jsonl", tmp_path / "cheap.jsonl"
    assert route("--router", router_dir, "--prompts", inp, "--out", free).exit_code == 0
    assert set(Decisions.load(free).models) == {"model-b"}
    config = tmp_path / "models.yaml"
    # b beats c by <= 0.21 in P(good); their relative costs differ by 0.09: w = 3 tips it.
    config.write_text(CONFIG.format(w=3))  # w from the config
    result = route("--router", router_dir, "--prompts", inp, "--out", cheap, "--config", config)
    assert result.exit_code == 0, result.output
    assert set(Decisions.load(cheap).models) == {"model-c"}
    no_prices = route("--router", router_dir, "--prompts", inp, "--out", tmp_path / "x.jsonl",
                      "--cost-weight", 3)
    assert no_prices.exit_code == 2 and "--config" in no_prices.output
    assert not (tmp_path / "x.jsonl").exists()


@pytest.fixture
def scored(fake_dataset, router_dir, tmp_path):
    """The fake dataset and the keyword router's decisions on it, split into two 'fold' files."""
    data = fake_dataset.save(tmp_path / "ds.parquet")
    out = tmp_path / "all.jsonl"
    assert route("--router", router_dir, "--prompts", data, "--out", out).exit_code == 0
    lines = out.read_text().splitlines(keepends=True)
    (tmp_path / "fold0.jsonl").write_text("".join(lines[::2]))
    (tmp_path / "fold1.jsonl").write_text("".join(lines[1::2]))
    return data, [tmp_path / "fold0.jsonl", tmp_path / "fold1.jsonl"]


def test_calibrate_meets_targets_and_is_deterministic(fake_dataset, scored):
    data, folds = scored
    w0 = calibrate(fake_dataset, PRICES, score_files=folds, target_share=("model-a", 1.0), plot_points=12)
    cost_w0 = w0.references["router_w0"]["cost_per_1k"]
    cheapest = min(p["cost_per_1k"] for p in w0.points)
    target = (cost_w0 + cheapest) / 2
    result = calibrate(fake_dataset, PRICES, score_files=folds, target_cost=target, plot_points=12)
    w = result.chosen["w"]
    assert 0 < w and result.chosen["cost_per_1k"] <= target < cost_w0
    assert all(p["cost_per_1k"] > target for p in result.points if p["w"] < w)
    assert result.to_dict()["cost_weight_line"] == f"cost_weight: {np.format_float_positional(w, trim='-')}"
    assert set(result.references["candidates"]) == {"model-a", "model-b", "model-c"}
    assert result.references["candidates"]["model-a"]["shares"]["model-a"] == 1
    assert result.inputs["queries"] == len(fake_dataset.where(source=result.inputs["benchmarks"]))
    again = calibrate(fake_dataset, PRICES, score_files=folds, target_cost=target, plot_points=12)
    strip = lambda d: {**d, "inputs": {**d["inputs"], "evaluate_seconds": 0}}  # noqa: E731
    assert strip(again.to_dict()) == strip(result.to_dict())

    share = calibrate(fake_dataset, PRICES, score_files=folds, target_share=("model-c", 0.6), plot_points=12)
    gap = abs(share.chosen["shares"]["model-c"] - 0.6)
    assert all(abs(p["shares"]["model-c"] - 0.6) >= gap - 1e-9 for p in share.points)
    assert share.chosen["shares"]["model-c"] > share.references["router_w0"]["shares"]["model-c"]

    with pytest.raises(CalibrationError, match="cheapest routing"):
        calibrate(fake_dataset, PRICES, score_files=folds, target_cost=cheapest / 2)
    with pytest.raises(CalibrationError, match="not a candidate"):
        calibrate(fake_dataset, PRICES, score_files=folds, target_share=("gpt-9", 0.5))
    assert parse_share("model-a=25%") == ("model-a", 0.25)
    with pytest.raises(CalibrationError, match="MODEL=FRACTION"):
        parse_share("model-a=2")


def test_sweep_top_weight_sends_everything_to_the_cheapest():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.55]])
    costs = np.array([[1.0, 0.1], [1.0, 0.1], [2.0, 0.2]])
    sweep = Sweep(["dear", "cheap"], scores, costs, costs)
    top = sweep.top_weight()
    assert top == pytest.approx(0.8 / 0.9)
    assert (sweep.choice(top * 1.001) == 1).all() and (sweep.choice(top * 0.999) == 1).sum() == 2


def test_calibrate_cli_writes_json_and_plot(scored, tmp_path):
    data, folds = scored
    config = tmp_path / "models.yaml"
    config.write_text(CONFIG.format(w=0))
    args = ["calibrate", "--data", str(data), "--config", str(config), "--out", str(tmp_path / "cal")]
    args += ["--decisions", str(folds[0].parent / "fold*.jsonl")]  # a quoted glob, expanded by the command
    result = runner.invoke(app, args + ["--target-share", "model-c=0.5"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "cal/calibration.json").read_text())
    assert "cost_weight: " in result.output and saved["cost_weight_line"] in result.output
    assert (tmp_path / "cal/calibration.png").read_bytes()[:4] == b"\x89PNG"
    ws = [p["w"] for p in saved["points"]]
    assert ws == sorted(set(ws)) and ws[0] == 0 and len(ws) >= 20
    assert saved["inputs"]["scores"] == [str(f) for f in folds]
    impossible = runner.invoke(app, args + ["--target-cost", "0.000001"])
    assert impossible.exit_code == 2 and "cheapest routing" in impossible.output
    both = runner.invoke(app, args + ["--target-cost", "1", "--target-share", "model-c=0.5"])
    assert both.exit_code == 2 and "exactly one" in both.output
    bare = tmp_path / "bare.jsonl"
    bare.write_text('{"id": "GSM8K/0", "model": "model-a"}\n')
    no_scores = runner.invoke(app, ["calibrate", "--data", str(data), "--config", str(config),
                                    "--decisions", str(bare), "--target-cost", "1"])
    assert no_scores.exit_code == 2 and "bare.jsonl" in no_scores.output and "'scores'" in no_scores.output
