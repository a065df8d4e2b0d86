"""What each request used and cost, and what the proxy says about each request: token counts and
cost in the request log and /metrics (streamed or not, with or without the upstream's usage), the
access log line, the replay miss named by its candidate, and the echo backend."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time

import httpx
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lookahead_router.catalogue import ConfigError, ServeConfig, UpstreamConfig, load_config
from lookahead_router.serving import access_log
from lookahead_router.serving.app import create_app
from lookahead_router.serving.fake_upstream import BackgroundServer, create_fake_upstream
from lookahead_router.serving.upstream import HTTPUpstream, UpstreamSession
from test_serving import CANDS, CODE, MATH, KeywordRouter, ask, client, config, replay_setup

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def upstream():
    with BackgroundServer(create_fake_upstream(chunks=4)) as server:
        yield server


def metrics(proxy) -> dict[tuple, float]:
    """/metrics as {(sample name, sorted labels): value}."""
    found = {}
    for family in text_string_to_metric_families(httpx.get(f"{proxy.url}/metrics").text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def rows(proxy, path) -> list[dict]:
    proxy.server.config.app.state.proxy.log.flush()
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    return [dict(r) for r in db.execute("SELECT * FROM requests ORDER BY time")]


def sse_events(proxy, body: dict) -> list[dict]:
    """The data events of a streamed answer exactly as the proxy sent them (but [DONE])."""
    with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json={**body, "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


def priced(cfg: ServeConfig) -> ServeConfig:
    cfg.models["A"].price_input, cfg.models["A"].price_output = 2.0, 6.0  # B and C: no price
    return cfg


def tokens(prompt: str, model: str) -> tuple[int, int]:
    """The fake upstream's usage for ``prompt`` asked of upstream ``model``."""
    return len(prompt) // 4, len(f"{model} answers: {prompt}") // 4


@pytest.mark.parametrize("stream", [False, True])
def test_usage_and_cost_are_logged_and_counted_per_model(upstream, tmp_path, stream):
    log = tmp_path / "log.sqlite"
    with BackgroundServer(create_app(KeywordRouter(), priced(config(upstream, request_log=str(log))))) as proxy:
        c = client(proxy)
        for prompt, model in ((MATH, "lookahead"), (CODE, "B")):  # routed to A; passed through to B
            if stream:
                assert [ch.usage for ch in ask(c, prompt, model=model, stream=True)][-1] is None
            else:
                assert ask(c, prompt, model=model).usage is not None
        found = metrics(proxy)
        logged = rows(proxy, log)
    (pa, ca), (pb, cb) = tokens(MATH, "up-a"), tokens(CODE, "up-b")
    assert [(r["chosen_model"], r["prompt_tokens"], r["completion_tokens"]) for r in logged] == [
        ("A", pa, ca), ("B", pb, cb)]
    assert logged[0]["cost_usd"] == pytest.approx(pa * 2.0 / 1e6 + ca * 6.0 / 1e6)
    assert logged[1]["cost_usd"] is None  # B has no price: its cost is unknown, not $0
    assert found[("lookahead_tokens_total", (("kind", "prompt"), ("model", "A")))] == pa
    assert found[("lookahead_tokens_total", (("kind", "completion"), ("model", "A")))] == ca
    assert found[("lookahead_tokens_total", (("kind", "completion"), ("model", "B")))] == cb
    assert found[("lookahead_cost_usd_total", (("model", "A"),))] == pytest.approx(logged[0]["cost_usd"])
    assert ("lookahead_cost_usd_total", (("model", "B"),)) not in found
    assert not any(name == "lookahead_usage_missing_total" for name, _ in found)


def test_a_stream_asks_for_usage_and_hides_it_from_a_client_that_did_not(upstream, tmp_path):
    log = tmp_path / "log.sqlite"
    bodies = upstream.server.config.app.state.last_body
    with BackgroundServer(create_app(KeywordRouter(), config(upstream, request_log=str(log)))) as proxy:
        plain = sse_events(proxy, {"model": "A", "messages": [{"role": "user", "content": MATH}]})
        assert bodies["up-a"]["stream_options"] == {"include_usage": True}  # asked for, by the proxy
        # What OpenAI sends a client that did not ask: no usage key, no chunk without choices.
        assert all("usage" not in e and e["choices"] for e in plain)
        assert "".join(e["choices"][0]["delta"].get("content") or "" for e in plain) == f"up-a answers: {MATH}"
        asked = sse_events(proxy, {"model": "A", "messages": [{"role": "user", "content": MATH}],
                                   "stream_options": {"include_usage": True}})
        assert [e["usage"] for e in asked[:-1]] == [None] * (len(asked) - 1)
        assert asked[-1]["choices"] == [] and asked[-1]["usage"]["prompt_tokens"] == tokens(MATH, "up-a")[0]
        assert [e["model"] for e in asked] == ["A"] * len(asked)
        logged = rows(proxy, log)
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in logged] == [tokens(MATH, "up-a")] * 2


def test_a_usage_chunk_with_choices_loses_only_its_usage():
    up = HTTPUpstream("A", UpstreamConfig(base_url="http://x/v1", model="up-a"), UpstreamSession(1))
    data = {"model": "up-a", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
    event = up._without_usage(up._event(orjson.dumps(data)))
    assert not event.hidden and event.data["usage"]["completion_tokens"] == 4  # read by the proxy
    assert orjson.loads(event.raw) == {"model": "A", "choices": data["choices"]}  # not shown


@pytest.mark.parametrize("stream_usage", [True, False])
def test_without_usage_the_counts_stay_null_and_are_counted_missing(upstream, tmp_path, stream_usage):
    log = tmp_path / "log.sqlite"
    cfg = priced(config(upstream, {"A": "nousage-a", "B": "up-b"}, request_log=str(log)))
    cfg.models["B"].stream_usage = stream_usage
    bodies = upstream.server.config.app.state.last_body
    with BackgroundServer(create_app(KeywordRouter(), cfg)) as proxy:
        c = client(proxy)
        ask(c, MATH)
        list(ask(c, MATH, stream=True))
        list(ask(c, MATH, model="B", stream=True))
        found = metrics(proxy)
        logged = rows(proxy, log)
    assert [(r["chosen_model"], r["status"]) for r in logged] == [("A", 200), ("A", 200), ("B", 200)]
    assert [(r["prompt_tokens"], r["completion_tokens"], r["cost_usd"]) for r in logged[:2]] == [(None,) * 3] * 2
    assert found[("lookahead_usage_missing_total", (("model", "A"),))] == 2
    assert ("lookahead_tokens_total", (("kind", "prompt"), ("model", "A"))) not in found
    # stream_usage: false asks nothing of B, which then reports nothing either
    assert ("stream_options" in bodies["up-b"]) is stream_usage
    assert (logged[2]["prompt_tokens"] is not None) is stream_usage


def access_lines(caplog, n: int, seconds: float = 10) -> list[str]:
    """The first ``n`` access log lines (written just after each response: wait for them)."""
    deadline = time.monotonic() + seconds
    while True:
        lines = [r.getMessage() for r in caplog.records if r.name == "lookahead.access"]
        if len(lines) >= n or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def test_one_access_log_line_per_request_without_the_prompt(upstream, caplog):
    caplog.set_level(logging.INFO, logger="lookahead.access")
    with BackgroundServer(create_app(KeywordRouter(), priced(config(upstream)))) as proxy:
        c = client(proxy)
        routed = c.chat.completions.with_raw_response.create(
            model="lookahead", messages=[{"role": "user", "content": MATH}])
        list(ask(c, CODE, model="B", stream=True))
        with pytest.raises(openai.NotFoundError):
            ask(c, MATH, model="gpt-9")
        httpx.get(f"{proxy.url}/health")
        lines = access_lines(caplog, 4)
    assert len(lines) == 4
    pa, ca = tokens(MATH, "up-a")
    cost = (pa * 2.0 + ca * 6.0) / 1e6
    assert lines[0] == (f'127.0.0.1 "POST /v1/chat/completions" 200 {lines[0].split()[4]} model=A routed=1 '
                        f'attempts=1 tokens={pa}+{ca} cost=${cost:.6f} id={routed.headers["x-request-id"]}')
    assert re.fullmatch(r'127\.0\.0\.1 "POST /v1/chat/completions" 200 \d+ms model=B routed=0 attempts=1 '
                        r'tokens=\d+\+\d+ cost=- id=[0-9a-f]{32}', lines[1]), lines[1]
    assert re.fullmatch(r'127\.0\.0\.1 "POST /v1/chat/completions" 404 \d+ms model=- routed=0 attempts=0 '
                        r'tokens=- cost=- id=[0-9a-f]{32}', lines[2]), lines[2]
    assert re.fullmatch(r'127\.0\.0\.1 "GET /health" 200 \d+ms', lines[3]), lines[3]
    assert not any("equation" in line or "python" in line for line in lines)  # never the prompt


def test_the_access_log_turns_off_and_never_fails_a_request(upstream, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="lookahead.access")
    with BackgroundServer(create_app(KeywordRouter(), config(upstream, access_log=False))) as proxy:
        assert ask(client(proxy), MATH).model == "A"
        httpx.get(f"{proxy.url}/health")
    assert access_lines(caplog, 1, seconds=0.5) == []
    monkeypatch.setattr(access_log, "access_line", lambda *a: 1 / 0)
    with BackgroundServer(create_app(KeywordRouter(), config(upstream))) as proxy:
        assert ask(client(proxy), MATH).model == "A"
        assert [ch.model for ch in ask(client(proxy), MATH, stream=True)][-1] == "A"
        assert httpx.get(f"{proxy.url}/health").status_code == 200


def test_a_replay_miss_names_its_candidate(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="lookahead.access")
    _, cfg = replay_setup(tmp_path)
    with BackgroundServer(create_app(KeywordRouter(), cfg)) as proxy:
        with pytest.raises(openai.NotFoundError, match=r"A \(replay backend\): .*has no record") as info:
            ask(client(proxy), "solve the equation nobody recorded")
        assert info.value.code == "replay_miss"
        found = metrics(proxy)
        lines = access_lines(caplog, 1)
    assert found[("lookahead_requests_total", (("cause", "upstream_rejected"), ("model", "A"),
                                               ("status", "404")))] == 1
    assert " 404 " in lines[0] and "model=A routed=1 attempts=1" in lines[0]


def echo_config(**options) -> ServeConfig:
    return ServeConfig.model_validate({"models": {c: {"echo": True, "price_input": 1.0, "price_output": 1.0}
                                                  for c in CANDS}, **options})


def test_the_echo_backend_answers_any_prompt_streamed_or_not(tmp_path):
    log = tmp_path / "log.sqlite"
    prompt = "Write a Python function that merges two sorted lists."
    expected = "[echo from C] Write a Python function that merges two sorted ..."
    with BackgroundServer(create_app(KeywordRouter(), echo_config(request_log=str(log)))) as proxy:
        c = client(proxy)
        answer = ask(c, prompt, n=2)
        assert answer.model == "C" and [ch.message.content for ch in answer.choices] == [expected] * 2
        assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (9, 2 * 12)  # words
        chunks = list(ask(c, "What is 17% of 240?", model="A", stream=True, stream_options={"include_usage": True}))
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == \
            "[echo from A] What is 17% of 240?"
        assert {ch.model for ch in chunks} == {"A"} and chunks[-1].usage.completion_tokens == 8
        plain = sse_events(proxy, {"model": "B", "messages": [{"role": "user", "content": "hi there"}]})
        assert all("usage" not in e and e["choices"] for e in plain)
        logged = rows(proxy, log)
    assert [(r["chosen_model"], r["prompt_tokens"], r["completion_tokens"], r["cost_usd"]) for r in logged] == [
        ("C", 9, 24, pytest.approx(33e-6)), ("A", 5, 8, pytest.approx(13e-6)), ("B", 2, 5, pytest.approx(7e-6))]


def test_a_candidate_needs_exactly_one_backend(tmp_path):
    path = tmp_path / "models.yaml"
    for spec, given in (("{base_url: http://x/v1, echo: true}", "base_url and echo"),
                        ("{echo: false, price_input: 1}", "none"),
                        ("{replay: d.parquet, echo: true}", "replay and echo")):
        path.write_text(f"models:\n  A: {{echo: true}}\n  B: {spec}\n")
        with pytest.raises(ConfigError, match=rf"models.yaml: models\.B: .*exactly one of base_url .* got {given}$"):
            load_config(path)
    path.write_text("models:\n  A: {echo: true}\n")
    assert load_config(path).models["A"].echo


def test_the_example_echo_config_matches_the_replay_one():
    from pathlib import Path
    examples = Path(__file__).parent.parent / "examples"
    echo, replay = load_config(examples / "echo.yaml"), load_config(examples / "replay.yaml")
    assert list(echo.models) == list(replay.models) and echo.router == replay.router
    for name, up in echo.models.items():
        assert up.echo and up.usd_per_million_tokens() == replay.models[name].usd_per_million_tokens()
    assert echo.request_log.endswith("runs/demo-echo-requests.sqlite")


def test_serve_with_workers_prints_one_access_line_per_request(tmp_path):
    """`lookahead serve --workers 2`: the workers write their lines to stdout, and uvicorn's own
    access log prints nothing."""
    import subprocess
    import sys
    from pathlib import Path

    from lookahead_router.routers.registry import make_router
    from lookahead_router.serving.fake_upstream import free_port, stop, wait_until_serving
    from test_training import topic_dataset
    router = tmp_path / "router"
    make_router("knn", backbone="tiny-bert", max_length=32, progress=False).fit(topic_dataset()).save(router)
    cfg = tmp_path / "echo.yaml"
    cfg.write_text(json.dumps({"router": str(router), "models": {c: {"echo": True} for c in CANDS}}))
    port, out = free_port(), tmp_path / "serve.out"
    with out.open("wb") as fh:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "lookahead"), "serve", "--config", str(cfg),
                                 "--port", str(port), "--workers", "2", "--engine", "torch"],
                                stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/health", proc)
        ids = [httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={
            "model": "lookahead", "stream": i % 2 == 0, "messages": [{"role": "user", "content": f"{MATH} {i}"}]})
            .headers["x-request-id"] for i in range(8)]
        time.sleep(0.5)
    finally:
        stop(proc)
    printed = out.read_text()
    assert "HTTP/1.1" not in printed and "equation" not in printed  # no uvicorn line, no prompt
    chat = [line for line in printed.splitlines() if '"POST /v1/chat/completions" 200' in line]
    assert sorted(line.rsplit("id=", 1)[1] for line in chat) == sorted(ids)
    assert all(re.search(r" model=[ABC] routed=1 attempts=1 tokens=\d+\+\d+ cost=- id=", line) for line in chat)


def test_no_access_log_overrides_the_config(tmp_path, monkeypatch):
    """What `lookahead serve --no-access-log` hands each process (``ServeSettings.access_log``)."""
    from lookahead_router.routers.base import Router
    from lookahead_router.serving.launch import ServeSettings, load_serving
    monkeypatch.setattr(Router, "load", staticmethod(lambda path, **runtime: KeywordRouter()))
    cfg = tmp_path / "echo.yaml"
    for in_file, flag, expected in ((True, None, True), (True, False, False), (False, None, False)):
        cfg.write_text(json.dumps({"router": "r", "access_log": in_file, "models": {c: {"echo": True} for c in CANDS}}))
        assert load_serving(ServeSettings(str(cfg), access_log=flag))[0].access_log is expected
