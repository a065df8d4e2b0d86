"""Data collection: generation against a scripted OpenAI-compatible server on loopback (429, 500, a
hang, a crash and resume), the local and replay backends, scoring, dataset building and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from typer.testing import CliRunner

from lookahead_router.catalogue import load_config
from lookahead_router.cli.main import app
from lookahead_router.collection.build import build_dataset
from lookahead_router.collection.generate import generate
from lookahead_router.collection.score import score_collection
from lookahead_router.collection.store import JsonlStore, errors_file, responses_file, scores_file
from lookahead_router.collection.tasks import Score, Scorer, TaskFileError, read_tasks
from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.serving.fake_upstream import BackgroundServer


def scripted_server() -> FastAPI:
    """Answers depend on the model id:
    ok / slow   "<model> says: <prompt>" (slow: after 0.2 s)
    flaky       per prompt: first 429 (Retry-After 10 ms), then 500, then the answer
    hang-once   per prompt: the first request never answers, the next one does
    fail        always 500
    """
    api = FastAPI()
    api.state.calls = Counter()   # (model, prompt) -> requests
    api.state.bodies = []

    @api.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        model, prompt = body["model"], body["messages"][-1]["content"]
        api.state.calls[(model, prompt)] += 1
        api.state.bodies.append(body)
        n = api.state.calls[(model, prompt)]
        if model == "fail" or (model == "flaky" and n == 2):
            return JSONResponse({"error": {"message": "boom", "type": "server_error"}}, status_code=500)
        if model == "flaky" and n == 1:
            return JSONResponse({"error": {"message": "slow down", "type": "rate_limit"}},
                                status_code=429, headers={"retry-after-ms": "10"})
        if model == "hang-once" and n == 1:
            await asyncio.sleep(5)  # longer than the client waits
        if model == "slow":
            await asyncio.sleep(0.2)
        text = f"{model} says: {prompt}"
        return {"id": "x", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}

    return api


def write_prompts(path: Path, n: int, **extra) -> Path:
    path.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"question {i}", **extra}) + "\n"
                            for i in range(n)))
    return path


def write_models(path: Path, url: str, models: list[str], **generation) -> Path:
    lines = ["models:"]
    for m in models:
        lines += [f"  {m}:", f"    base_url: {url}/v1", "    timeout_s: 0.5"]
    gen = {"max_retries": 2, **generation}
    lines += ["generation:"] + [f"  {k}: {v}" for k, v in gen.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def server():
    api = scripted_server()
    with BackgroundServer(api) as srv:
        srv.api = api
        yield srv


def test_generate_retries_429_500_and_a_hang_and_sends_the_paper_sampling(server, tmp_path):
    tasks = read_tasks(write_prompts(tmp_path / "p.jsonl", 3))
    config = load_config(write_models(tmp_path / "m.yaml", server.url, ["ok", "flaky", "hang-once"]))
    summary = generate(tasks, config, tmp_path / "c", progress=False)
    assert summary.requested == 9 and summary.failed == {}
    assert summary.written == {"ok": 3, "flaky": 3, "hang-once": 3}
    for model in ("ok", "flaky", "hang-once"):
        got = JsonlStore(responses_file(tmp_path / "c", model)).load()
        assert {qid: r["response"] for qid, r in got.items()} == \
            {f"q{i}": f"{model} says: question {i}" for i in range(3)}
        assert all(r["usage"]["total_tokens"] == 7 and r["finish_reason"] == "stop" for r in got.values())
    calls = server.api.state.calls
    assert [calls[("flaky", f"question {i}")] for i in range(3)] == [3, 3, 3]      # 429, 500, ok
    assert [calls[("hang-once", f"question {i}")] for i in range(3)] == [2, 2, 2]  # timeout, ok
    body = next(b for b in server.api.state.bodies if b["model"] == "ok")
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.8, 0.95, 2048)
    assert not errors_file(tmp_path / "c").exists()


def test_failed_pairs_are_recorded_and_retried_on_the_next_run(server, tmp_path):
    tasks = read_tasks(write_prompts(tmp_path / "p.jsonl", 2))
    config = load_config(write_models(tmp_path / "m.yaml", server.url, ["ok", "fail"]))
    summary = generate(tasks, config, tmp_path / "c", progress=False)
    assert summary.written == {"ok": 2} and summary.failed == {"fail": 2}
    errors = [json.loads(line) for line in errors_file(tmp_path / "c").read_text().splitlines()]
    assert sorted(e["id"] for e in errors) == ["q0", "q1"] and "HTTP 500" in errors[0]["error"]
    assert server.api.state.calls[("fail", "question 0")] == 3  # 1 + max_retries
    again = generate(tasks, config, tmp_path / "c", progress=False)
    assert again.skipped == 2 and again.requested == 2  # only the failed pairs are tried again


def test_a_crashed_run_resumes_without_losing_or_repeating_a_pair(server, tmp_path):
    n = 20
    prompts = write_prompts(tmp_path / "p.jsonl", n)
    models = write_models(tmp_path / "m.yaml", server.url, ["slow"], concurrency=2)
    out = tmp_path / "c"
    proc = subprocess.Popen([sys.executable, "-m", "lookahead_router.cli.main", "collect", "generate",
                             "--prompts", str(prompts), "--config", str(models), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = responses_file(out, "slow")
    deadline = time.time() + 60
    while time.time() < deadline and (not path.exists() or path.read_text().count("\n") < 4):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = path.read_text().count("\n")
    assert 4 <= kept < n
    with path.open("a") as fh:  # a write cut short by the crash
        fh.write('{"id": "q19", "model": "slow", "resp')
    before = sum(v for (m, _), v in server.api.state.calls.items() if m == "slow")
    summary = generate(read_tasks(prompts), load_config(models), out, progress=False)
    assert summary.skipped == kept and summary.written == {"slow": n - kept}
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(r["id"] for r in lines) == sorted(f"q{i}" for i in range(n))  # each exactly once
    after = sum(v for (m, _), v in server.api.state.calls.items() if m == "slow")
    assert after - before == n - kept


def test_replay_and_local_backends(tmp_path):
    ds = RoutingDataset(["A", "B"], pd.DataFrame({
        "id": ["1", "2"], "source": "s", "split": "train", "prompt": ["question 0", "question 1"],
        "turns": [["question 0"], ["question 1"]], "payload": [{}, {}]}),
        np.array([["a0", "b0"], ["a1", "b1"]], dtype=object), np.zeros((2, 2)))
    ds.save(tmp_path / "d.parquet")
    (tmp_path / "m.yaml").write_text(
        "models:\n  A:\n    replay: d.parquet\n  tiny:\n    local: tiny-llama\n"
        "generation:\n  max_tokens: 3\n  engine: transformers\n  seed: 0\n")
    tasks = read_tasks(write_prompts(tmp_path / "p.jsonl", 2))
    summary = generate(tasks, load_config(tmp_path / "m.yaml"), tmp_path / "c", progress=False)
    assert summary.written == {"A": 2, "tiny": 2}
    replayed = JsonlStore(responses_file(tmp_path / "c", "A")).load()
    assert {k: r["response"] for k, r in replayed.items()} == {"q0": "a0", "q1": "a1"}
    local = JsonlStore(responses_file(tmp_path / "c", "tiny")).load()
    assert all(isinstance(r["response"], str) and r["finish_reason"] in ("stop", "length")
               for r in local.values())


@pytest.mark.parametrize("second_line, error", [
    ('{"id": "b", "prompt": "y", "split": "dev"}', "'split' must be one of"),
    ('{"id": "b", "prompt": "y", "tests": []}', "'tests' must be"),
    ('{"id": "b", "prompt": "y", "source": 3}', "'source' must be a string"),
    ('{"id": "b", "prompt": "y", "reference": true}', "'reference' must be a string or a number"),
    ('{"id": "a", "prompt": "y"}', "duplicate id 'a' \\(first on line 1\\)"),
])
def test_prompts_file_errors_name_file_and_line(tmp_path, second_line, error):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"id": "a", "prompt": "x", "reference": 72}\n' + second_line + "\n")
    with pytest.raises(TaskFileError, match=r"p.jsonl:2: " + error):
        read_tasks(bad)
    bad.write_text('{"id": "a", "prompt": "x", "reference": 72}\n')
    assert read_tasks(bad)[0].reference == "72"                 # a number is a fine reference


class LengthScorer(Scorer):
    """Scores a response by whether it mentions the candidate's favourite word."""
    name = "math"

    def applies(self, task):
        return task.source != "chat"

    def score(self, pairs, progress=True):
        return [Score(None, "no answer") if "???" in r else Score(float("good" in r)) for _, r in pairs]


def fake_collection(root: Path, tasks, answers: dict[str, list[str]]) -> None:
    for model, texts in answers.items():
        JsonlStore(responses_file(root, model)).append(
            [{"id": t.id, "model": model, "response": text} for t, text in zip(tasks, texts)])


def test_score_then_build_drops_ties_and_records_the_threshold(tmp_path):
    rows = [{"id": f"m{i}", "prompt": f"math {i}", "source": "math"} for i in range(8)] + \
           [{"id": "c0", "prompt": "chat", "source": "chat"}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = read_tasks(tmp_path / "p.jsonl")
    root = tmp_path / "c"
    # A is good on even prompts, B on odd ones; prompt m7: both good (a tie); m6: A unscorable
    a = ["good" if i % 2 == 0 else "bad" for i in range(8)] + ["hi"]
    b = ["bad" if i % 2 == 0 else "good" for i in range(8)] + ["hi"]
    a[7], a[6] = "good", "???"
    fake_collection(root, tasks, {"A": a, "B": b})
    summary = score_collection(tasks, root, LengthScorer(), progress=False)
    assert summary.scored == {"A": 8, "B": 8} and summary.not_applicable == 1
    assert summary.unscorable == {"A": 1, "B": 0}
    assert score_collection(tasks, root, LengthScorer(), progress=False).skipped == 16  # resumable
    JsonlStore(scores_file(root, "reward", "A")).append([{"id": "c0", "score": 2.0}, {"id": "m0", "score": -5}])
    JsonlStore(scores_file(root, "reward", "B")).append([{"id": "c0", "score": 1.0}])
    ds, report = build_dataset(tasks, root, test_fraction=0.0, threshold=0.5)
    # m7 ties (both 1), m6 has one scored candidate (a tie too); c0 comes from the reward scorer
    assert sorted(ds.ids) == ["c0", "m0", "m1", "m2", "m3", "m4", "m5"] and report.dropped_ties == 2
    assert ds.candidates == ["A", "B"] and ds.metadata["label_threshold"] == 0.5
    scores = dict(zip(ds.ids, ds.scores.tolist()))
    assert scores["m0"] == [1.0, 0.0] and scores["m1"] == [0.0, 1.0] and scores["c0"] == [2.0, 1.0]
    assert report.per_source["math"]["best_share"] == {"A": 50.0, "B": 50.0}
    keep_all, _ = build_dataset(tasks, root, test_fraction=0.0, keep_ties=True)
    assert len(keep_all) == 9


def test_cli_build_train_and_benchmark_on_a_collection(tmp_path):
    rows = [{"id": f"q{i}", "prompt": ("math " if i % 2 else "code ") + f"task {i}",
             "source": "mix"} for i in range(40)]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = read_tasks(tmp_path / "p.jsonl")
    root = tmp_path / "c"
    fake_collection(root, tasks, {"A": ["x"] * 40, "B": ["y"] * 40})
    for model, good in (("A", 1), ("B", 0)):
        JsonlStore(scores_file(root, "math", model)).append(
            [{"id": t.id, "score": float(i % 2 == good)} for i, t in enumerate(tasks)])
    runner = CliRunner()
    res = runner.invoke(app, ["collect", "build", "--dir", str(root), "--prompts", str(tmp_path / "p.jsonl"),
                              "--out", str(tmp_path / "d.parquet")])
    assert res.exit_code == 0, res.output
    ds = RoutingDataset.load(tmp_path / "d.parquet")
    assert Counter(ds.queries["split"]) == {"train": 32, "test": 8}
    res = runner.invoke(app, ["train", "--router", "knn", "--data", str(tmp_path / "d.parquet"),
                              "--splits", "train", "--backbone", "tiny-bert", "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["benchmark", "--data", str(tmp_path / "d.parquet"), "--routers", "knn",
                              "--protocol", "split", "--preset", "smoke", "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "b" / "report.json").read_text())


def test_cli_generate_reports_failures_and_a_bad_config(server, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", 1)
    runner = CliRunner()
    res = runner.invoke(app, ["collect", "generate", "--prompts", str(prompts), "--config",
                              str(write_models(tmp_path / "m.yaml", server.url, ["fail"])),
                              "--out", str(tmp_path / "c"), "--max-retries", "0"])
    assert res.exit_code == 1 and "failed after retries" in res.output
    (tmp_path / "bad.yaml").write_text("models:\n  A:\n    local: x\n    base_url: http://h\n")
    res = runner.invoke(app, ["collect", "generate", "--prompts", str(prompts), "--config",
                              str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "exactly one of base_url" in res.output


def test_cli_prompts_to_dataset_with_the_math_and_code_scorers(tmp_path):
    """prompts -> generate (replay) -> score math and code in the sandbox -> build, all via the CLI."""
    prompts = ["What is 6 x 7? Put the answer in \\boxed{}.", "Write add(a, b).", "Write neg(x)."]
    answers = {"A": ["So \\boxed{42}.", "```python\ndef add(a, b):\n    return a + b\n```",
                     "```python\ndef neg(x):\n    return x\n```"],
               "B": ["It is \\boxed{41}.", "def add(a, b):\n    return a - b",
                     "```python\ndef neg(x):\n    return -x\n```"]}
    ds = RoutingDataset(["A", "B"], pd.DataFrame({
        "id": ["1", "2", "3"], "source": "s", "split": "test", "prompt": prompts,
        "turns": [[p] for p in prompts], "payload": [{}, {}, {}]}),
        np.array([[answers["A"][i], answers["B"][i]] for i in range(3)], dtype=object), np.zeros((3, 2)))
    ds.save(tmp_path / "d.parquet")
    (tmp_path / "m.yaml").write_text("models:\n  A: {replay: d.parquet}\n  B: {replay: d.parquet}\n")
    rows = [{"id": "m", "prompt": prompts[0], "source": "math", "reference": "42"},
            {"id": "c1", "prompt": prompts[1], "source": "code",
             "tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]},
            {"id": "c2", "prompt": prompts[2], "source": "code", "tests": "assert neg(2) == -2"}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--prompts", str(tmp_path / "p.jsonl")]
    runner = CliRunner()
    for args in (["generate", "--config", str(tmp_path / "m.yaml"), "--out", str(tmp_path / "c")],
                 ["score", "--dir", str(tmp_path / "c"), "--scorer", "math"],
                 ["score", "--dir", str(tmp_path / "c"), "--scorer", "code", "--timeout", "5"],
                 ["build", "--dir", str(tmp_path / "c"), "--out", str(tmp_path / "out.parquet"),
                  "--test-fraction", "0"]):
        res = runner.invoke(app, ["collect", *args, *common])
        assert res.exit_code == 0, res.output
    built = RoutingDataset.load(tmp_path / "out.parquet")
    scores = dict(zip(built.ids, built.scores.tolist()))
    # add(0, 0) == 0 holds for a - b too: B passes one of c1's two tests
    assert scores == {"m": [1.0, 0.0], "c1": [1.0, 0.5], "c2": [0.0, 1.0]}
    assert built.metadata["scorers"] == ["code", "math"]
