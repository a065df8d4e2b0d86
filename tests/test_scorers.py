"""The collection's scorers: math answers (math-verify), the MT-Bench judge, reward models."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections import Counter
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from lookahead_router.collection.judge import (JudgeScorer, parse_rating, render_judge_prompt,
                                               verify_mtbench)
from lookahead_router.collection.math_scorer import MathScorer, extract_answer, grade, verify_math
from lookahead_router.collection.tasks import Task
from lookahead_router.serving.fake_upstream import BackgroundServer
from tests.conftest import real_release


def task(i, prompt="What is 1/2?", reference=None) -> Task:
    return Task(id=str(i), prompt=prompt, messages=[{"role": "user", "content": prompt}],
                reference=reference)


# --- math ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("response, reference, expected", [
    ("So x = \\boxed{\\frac{1}{2}}.", "0.5", True),             # equivalent forms
    ("The value is \\boxed{0.5}", "\\frac{1}{2}", True),
    ("First \\boxed{3}; no wait, \\boxed{4}.", "4", True),       # the last box wins
    ("First \\boxed{3}; no wait, \\boxed{4}.", "3", False),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt3}2", True),  # nested braces
    ("\\fbox{7}", "7", True),
    ("I think it is 5 but I am not sure", "5", False),           # no final answer
    ("She makes \\boxed{\\$1,234} a year.", "1234", True),       # GSM8K: dollars, commas
    ("\\boxed{1,234 dollars}", "1234", True),
    ("\\boxed{18 \\text{ eggs}}", "18", True),
    ("\\boxed{1,235}", "1234", False),
    ("The answer is 42.", "42", True),                          # fallback pattern
    ("\\boxed{\\text{(C)}}", "\\text{(C)}", True),
    ("\\boxed{4:30 p.m.}", "\\text{4:30 p.m.}", True),          # text answers: string match
    ("\\boxed{[0, 25]}", "[0,25]", True),                       # intervals
    ("\\boxed{(0, 25]}", "[0,25]", False),
])
def test_grade(response, reference, expected):
    assert grade(response, reference) is expected


def test_extract_answer():
    assert extract_answer("a \\boxed{\\frac{a}{b^{2}}} b") == "\\frac{a}{b^{2}}"
    assert extract_answer("\\boxed{1} then \\boxed{2}") == "2"
    assert extract_answer("Final Answer: The range of $g(x)$ is $[0,25]$.") == "[0,25]"
    assert extract_answer("\\boxed{The final answer is $220.}") == "$220"
    assert extract_answer("The answer is $n = 45$, as shown above.") == "n = 45"
    assert extract_answer("no answer here") is None
    assert extract_answer("") is None


def test_grade_from_a_thread_uses_worker_processes():
    # math-verify's signal.alarm timeouts fail outside the main thread; grading must not.
    out = {}
    worker = threading.Thread(target=lambda: out.update(ok=grade("\\boxed{0.25}", "\\frac14")))
    worker.start()
    worker.join(60)
    assert out == {"ok": True}


def test_math_scorer_on_tasks():
    scorer = MathScorer()
    assert scorer.name == "math"
    assert scorer.applies(task(0, reference="4")) and not scorer.applies(task(1))
    scores = scorer.score([(task(0, reference="4"), "2+2 = \\boxed{4}"),
                           (task(1, reference="\\frac{1}{2}"), "\\boxed{0.5}"),
                           (task(2, reference="7"), "it is eight")], progress=False)
    assert [s.value for s in scores] == [1.0, 1.0, 0.0]
    assert scores[0].detail == "answer '4' vs '4'"
    assert scores[2].detail == "answer None vs '7'"


def _write_gz(path: Path, obj, lines=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(map(json.dumps, obj)) if lines else json.dumps(obj))


def test_verify_math_counts_and_categorises(tmp_path):
    details = {
        "0": {"origin_prediction": "\\boxed{18}", "predictions": "18", "references": "18", "correct": True},
        "1": {"origin_prediction": "\\boxed{0.5}", "predictions": "0.5", "references": "\\frac{1}{2}",
              "correct": False},                                 # shipped string match missed it
        "2": {"origin_prediction": "\\boxed{3}", "predictions": "3", "references": "4", "correct": False},
        "3": {"origin_prediction": "so 26", "predictions": "26", "references": "26", "correct": True},
    }
    _write_gz(tmp_path / "test/MATH/m.json.gz", {"accuracy": 50.0, "details": details})
    [row] = verify_math(tmp_path, "MATH", ["m"], progress=False)
    assert (row.benchmark, row.model, row.n, row.agree) == ("MATH", "m", 4, 2)
    assert (row.ours, row.shipped) == (50.0, 50.0)
    kinds = {d["id"]: d["kind"] for d in row.disagreements}
    assert kinds == {"1": "decimal vs fraction",
                     "3": "no final answer in the response (shipped took a fallback)"}


# --- judge: prompts and ratings -----------------------------------------------------------------

EXPECTED_V1 = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided "
    "by an AI assistant to the user question displayed below. Your evaluation should consider factors "
    "such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of the "
    "response. Begin your evaluation by providing a short explanation. Be as objective as possible. "
    "After providing your explanation, you must rate the response on a scale of 1 to 10 by strictly "
    "following this format: \"[[rating]]\", for example: \"Rating: [[5]]\".\n\n"
    "[Question]\nWrite a {haiku}.\n\n[The Start of Assistant's Answer]\nLeaves fall.\n"
    "[The End of Assistant's Answer]")
EXPECTED_MATH_V1 = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided "
    "by an AI assistant to the user question displayed below. Your evaluation should consider "
    "correctness and helpfulness. You will be given a reference answer and the assistant's answer. "
    "Begin your evaluation by comparing the assistant's answer with the reference answer. Identify and "
    "correct any mistakes. Be as objective as possible. After providing your explanation, you must rate "
    "the response on a scale of 1 to 10 by strictly following this format: \"[[rating]]\", for example: "
    "\"Rating: [[5]]\".\n\n[Question]\nWhat is 2+2?\n\n[The Start of Reference Answer]\n4\n"
    "[The End of Reference Answer]\n\n[The Start of Assistant's Answer]\n5\n"
    "[The End of Assistant's Answer]")


def test_render_judge_prompt():
    assert render_judge_prompt("Write a {haiku}.", "Leaves fall.") == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": EXPECTED_V1}]
    assert render_judge_prompt("What is 2+2?", "5", reference="4")[1]["content"] == EXPECTED_MATH_V1


@pytest.mark.parametrize("judgment, rating", [
    ("Good answer.\n\nRating: [[7]]", 7.0),
    ("Rating: [[8.5]]", 8.5),
    ("Rating: [7]", 7.0),                       # FastChat's fallback pattern
    ("The answer is fine, I would give it a seven.", None),
    ("Rating: [[11]]", None),                   # outside 1-10
    ("Rating: [[0]]", None),
    ("First [[3]], on reflection [[9]]", 3.0),  # FastChat takes the first
    ("[[2]] and [5]", 2.0),
    ("", None),
])
def test_parse_rating(judgment, rating):
    assert parse_rating(judgment) == rating


def _fake_judge() -> FastAPI:
    """Rates by what the judged answer says: GOOD -> [[8]], MALFORMED -> no rating,
    FLAKY -> HTTP 500 on the first call then [[6]], BROKEN -> always HTTP 500, OUTAGE -> HTTP 500
    while ``app.state.outage`` is set, then [[5]]."""
    app = FastAPI()
    app.state.calls, app.state.prompts, app.state.outage = Counter(), [], False

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        app.state.prompts.append(body["messages"])
        answer = prompt.split("[The Start of Assistant's Answer]\n")[1].split("\n")[0]
        app.state.calls[answer] += 1
        if answer == "BROKEN" or (answer == "FLAKY" and app.state.calls[answer] == 1) \
                or (answer == "OUTAGE" and app.state.outage):
            return JSONResponse({"error": {"message": "judge overloaded"}}, status_code=500,
                                headers={"retry-after-ms": "10"})
        text = {"GOOD": "Helpful and correct.\n\nRating: [[8]]", "FLAKY": "Fine. [[6]]", "OUTAGE": "Ok. [[5]]",
                "MALFORMED": "I refuse to give a number. " + "x" * 300}[answer]
        return {"id": "j", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}]}
    return app


def test_judge_scorer_end_to_end():
    app = _fake_judge()
    pairs = [(task(0, "Say hi"), "GOOD"), (task(1, "Say hi"), "MALFORMED"),
             (task(2, "What is 2+2?", reference="4"), "FLAKY"), (task(3, "Say hi"), "BROKEN")]
    with BackgroundServer(app) as server:
        scorer = JudgeScorer(f"{server.url}/v1", "judge-model", concurrency=2, max_retries=2)
        scores = scorer.score(pairs, progress=False)
    assert [s.value for s in scores] == [8.0, None, 6.0, None]
    assert scores[0].extra == {"judgment": "Helpful and correct.\n\nRating: [[8]]"}
    assert scores[1].detail == "unparsable judgment: I refuse to give a number. " + "x" * 173
    assert scores[1].extra["judgment"].endswith("x" * 300)
    assert scores[3].detail.startswith("judge error: InternalServerError") and scores[3].retry
    assert not any(s.retry for s in scores[:3])
    assert app.state.calls == {"GOOD": 1, "MALFORMED": 1, "FLAKY": 2, "BROKEN": 3}
    flaky = [m for m in app.state.prompts if "FLAKY" in m[-1]["content"]][-1]
    assert flaky[0] == {"role": "system", "content": "You are a helpful assistant."}
    assert "[The Start of Reference Answer]\n4\n[The End of Reference Answer]" in flaky[1]["content"]


def test_judge_scorer_inside_a_running_event_loop():
    async def caller():               # e.g. a notebook cell: asyncio.run alone would refuse
        return scorer.score([(task(0), "GOOD")], progress=False)
    with BackgroundServer(_fake_judge()) as server:
        scorer = JudgeScorer(f"{server.url}/v1", "judge-model", max_retries=0)
        assert [s.value for s in asyncio.run(caller())] == [8.0]


def test_verify_mtbench_on_a_small_release(tmp_path):
    mt = tmp_path / "test/MT-Bench"
    _write_gz(mt / "question.jsonl.gz", [
        {"question_id": 81, "category": "writing", "turns": ["Write a {haiku}.", "Again"]},
        {"question_id": 111, "category": "math", "turns": ["What is 2+2?", "And 3+3?"]}], lines=True)
    _write_gz(mt / "judgments/gpt-4-0125-preview_judge_m_single.jsonl.gz", [
        {"question_id": 81, "turn": 1, "user_prompt": EXPECTED_V1, "judgment": "Ok [[7]]", "score": 7},
        {"question_id": 111, "turn": 1, "user_prompt": EXPECTED_MATH_V1, "judgment": "No", "score": -1},
        {"question_id": 81, "turn": 2, "user_prompt": "...", "judgment": "[[9]]", "score": 8}], lines=True)
    ratings, unparsed, templates = verify_mtbench(tmp_path, ["m"])
    assert (ratings.n, ratings.agree, ratings.ours, ratings.shipped) == (3, 2, 8.0, (7 - 1 + 8) / 3)
    assert [(d["id"], d["shipped"], d["ours"]) for d in ratings.disagreements] == [("81/turn2", 8.0, 9.0)]
    assert (unparsed.n, unparsed.agree) == (1, 1)                 # FastChat's -1: we find no rating
    assert (templates.n, templates.agree, templates.ours) == (2, 2, 100.0)


@pytest.mark.skipif(real_release() is None, reason="the paper's release is not beside the repository")
def test_verify_mtbench_on_the_real_release():
    rows = verify_mtbench(real_release(), ["Yi-1.5-34B-Chat", "internlm2_5-20b-chat"])
    assert [(r.model[:5], r.n, r.rate) for r in rows] == [
        ("Yi-1.", 160, 100.0), ("Yi-1.", 80, 100.0),
        ("inter", 160, 100.0), ("inter", 3, 100.0), ("inter", 80, 100.0)]
    assert [r.shipped for r in rows if r.n == 160] == pytest.approx([7.81, 7.48], abs=0.006)  # Table 1


# --- reward model -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_reward_models(tmp_path_factory) -> dict[str, Path]:
    """A random BERT (no chat template: text pairs) and a random Llama (SmolLM2's chat template)."""
    import torch
    from transformers import (BertConfig, BertForSequenceClassification, LlamaConfig,
                              LlamaForSequenceClassification)
    from lookahead_router.routers.backbones import load_tokenizer
    out = {}
    for kind, make in (("encoder", lambda n: BertForSequenceClassification(BertConfig(
            vocab_size=n, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, num_labels=1, initializer_range=0.5))),
                       ("causal", lambda n: LlamaForSequenceClassification(LlamaConfig(
            vocab_size=n, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, intermediate_size=64, num_labels=1, initializer_range=0.5)))):
        tokenizer = load_tokenizer("tiny-bert" if kind == "encoder" else "tiny-llama", kind)
        torch.manual_seed(0)
        folder = tmp_path_factory.mktemp(kind)
        make(len(tokenizer)).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        out[kind] = folder
    return out


@pytest.mark.parametrize("kind", ["encoder", "causal"])
def test_reward_model_scorer(tiny_reward_models, kind):
    from lookahead_router.collection.reward import RewardModelScorer
    pairs = [(task(i, f"question {i} " * (i + 1)), f"answer {i} " * (3 * i + 1)) for i in range(5)]
    one = RewardModelScorer(str(tiny_reward_models[kind]), batch_size=1, device="cpu")
    assert one.name == "reward" and one.applies(task(0))
    assert bool(one.tokenizer.chat_template) == (kind == "causal")
    scores = [s.value for s in one.score(pairs, progress=False)]
    assert len(scores) == 5 and all(isinstance(v, float) for v in scores)
    assert len(set(round(v, 4) for v in scores)) == 5             # the inputs matter
    again = RewardModelScorer(str(tiny_reward_models[kind]), batch_size=4, device="cpu")
    batched = [s.value for s in again.score(list(reversed(pairs)), progress=False)][::-1]
    assert batched == pytest.approx(scores, abs=1e-5)            # batching and order do not matter


def test_reward_model_that_cannot_be_loaded(tmp_path):
    from lookahead_router.collection.reward import RewardModelError, RewardModelScorer
    with pytest.raises(RewardModelError, match="cannot load reward model .*no-such-model"):
        RewardModelScorer(str(tmp_path / "no-such-model"))


def test_cli_scores_a_collection_with_the_judge_and_a_reward_model(tmp_path, tiny_reward_models):
    import json
    from typer.testing import CliRunner
    from lookahead_router.cli.main import app as cli
    from lookahead_router.collection.store import JsonlStore, responses_file, scores_file
    (tmp_path / "p.jsonl").write_text('{"id": "a", "prompt": "Say hi"}\n{"id": "b", "prompt": "Say bye"}\n')
    for model, answers in (("A", ["GOOD", "MALFORMED"]), ("B", ["FLAKY", "GOOD"])):
        JsonlStore(responses_file(tmp_path / "c", model)).append(
            [{"id": i, "model": model, "response": r} for i, r in zip("ab", answers)])
    common = ["collect", "score", "--dir", str(tmp_path / "c"), "--prompts", str(tmp_path / "p.jsonl")]
    runner = CliRunner()
    with BackgroundServer(_fake_judge()) as server:
        res = runner.invoke(cli, common + ["--scorer", "judge", "--judge-url", f"{server.url}/v1",
                                           "--judge-model", "j"])
    assert res.exit_code == 0, res.output
    judged = {m: {k: r["score"] for k, r in JsonlStore(scores_file(tmp_path / "c", "judge", m)).load().items()}
              for m in "AB"}
    assert judged == {"A": {"a": 8.0, "b": None}, "B": {"a": 6.0, "b": 8.0}}
    # A judge outage: the failed pair is not stored, the command fails, and a re-run scores it.
    JsonlStore(responses_file(tmp_path / "c", "C")).append(
        [{"id": "a", "model": "C", "response": "OUTAGE"}, {"id": "b", "model": "C", "response": "GOOD"}])
    flaky_judge = _fake_judge()
    flaky_judge.state.outage = True
    with BackgroundServer(flaky_judge) as server:
        judge = ["--scorer", "judge", "--judge-url", f"{server.url}/v1", "--judge-model", "j"]
        res = runner.invoke(cli, common + judge + ["--candidates", "C"])
        assert res.exit_code == 1 and "1 pairs failed and were not stored" in res.output, res.output
        assert "InternalServerError" in res.output and "run the same command again" in res.output
        assert list(JsonlStore(scores_file(tmp_path / "c", "judge", "C")).load()) == ["b"]
        flaky_judge.state.outage = False
        res = runner.invoke(cli, common + judge + ["--candidates", "C"])
    assert res.exit_code == 0, res.output
    assert {k: r["score"] for k, r in JsonlStore(scores_file(tmp_path / "c", "judge", "C")).load().items()} \
        == {"b": 8.0, "a": 5.0}
    res = runner.invoke(cli, common + ["--scorer", "judge"])
    assert res.exit_code == 2 and "needs --judge-url and --judge-model" in res.output
    res = runner.invoke(cli, common + ["--scorer", "reward", "--reward-model", str(tiny_reward_models["encoder"])])
    assert res.exit_code == 0, res.output
    rewards = JsonlStore(scores_file(tmp_path / "c", "reward", "A")).load()
    assert sorted(rewards) == ["a", "b"] and all(isinstance(r["score"], float) for r in rewards.values())
    assert json.loads((scores_file(tmp_path / "c", "reward", "B")).read_text().splitlines()[0])["scorer"] == "reward"
