"""The routing proxy, driven by the official `openai` client against fake upstreams on loopback."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time

import httpx
import numpy as np
import openai
import pytest

from lookahead_router.catalogue import ConfigError, ServeConfig, load_config
from lookahead_router.routers.base import Router
from lookahead_router.serving.app import create_app
from lookahead_router.serving.fake_upstream import BackgroundServer, create_fake_upstream
from lookahead_router.serving.fallback import CircuitBreaker
from lookahead_router.serving.request_log import export_prompts, prompt_hash

CANDS = ["A", "B", "C"]
MATH = "solve the equation 3x + 1 = 7"
CODE = "write a python function that sorts a list"


class KeywordRouter(Router):
    """A test double of the router contract: maths prefers A > B > C, anything else C > B > A."""
    name = "keyword"

    def __init__(self):
        super().__init__()
        self.candidates = list(CANDS)

    def _score(self, prompts):
        return np.array([[0.9, 0.6, 0.1] if "equation" in p else [0.1, 0.6, 0.9] for p in prompts])


@pytest.fixture(scope="module")
def upstream():
    with BackgroundServer(create_fake_upstream(chunks=4)) as server:
        yield server


def config(upstream, models=None, timeout_s=1.0, **options) -> ServeConfig:
    models = models or {}
    return ServeConfig.model_validate({
        "models": {c: {"base_url": f"{upstream.url}/v1", "model": models.get(c, f"up-{c.lower()}"),
                       "timeout_s": timeout_s} for c in CANDS},
        **options})


def client(server, key="none", retries=0) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=retries)


def ask(c, prompt, **kw):
    return c.chat.completions.create(model=kw.pop("model", "lookahead"),
                                     messages=[{"role": "user", "content": prompt}], **kw)


def streamed(c, prompt, **kw):
    chunks = list(ask(c, prompt, stream=True, **kw))
    return {ch.model for ch in chunks}, "".join(ch.choices[0].delta.content or "" for ch in chunks
                                                if ch.choices)


def test_routes_streams_and_passes_through(upstream):
    with BackgroundServer(create_app(KeywordRouter(), config(upstream))) as proxy:
        c = client(proxy)
        answer = ask(c, MATH)
        assert answer.model == "A" and answer.choices[0].message.content == f"up-a answers: {MATH}"
        raw = c.chat.completions.with_raw_response.create(
            model="lookahead", messages=[{"role": "user", "content": CODE}])
        assert raw.headers["x-lookahead-model"] == "C" and raw.parse().model == "C"
        assert streamed(c, CODE) == ({"C"}, f"up-c answers: {CODE}")
        # A candidate's own name goes to that candidate, whatever the router prefers.
        assert ask(c, MATH, model="B").model == "B"
        assert streamed(c, MATH, model="C") == ({"C"}, f"up-c answers: {MATH}")
        assert [m.id for m in c.models.list()] == ["lookahead", *CANDS]


def test_route_endpoint_and_cost_weight(upstream):
    cfg = config(upstream, cost_weight=0.0)
    cfg.models["A"].price_input = cfg.models["A"].price_output = 10.0  # A is dear, C is free
    cfg.models["B"].price_input = cfg.models["B"].price_output = 1.0
    with BackgroundServer(create_app(KeywordRouter(), cfg)) as proxy:
        plain = httpx.post(f"{proxy.url}/v1/route", json={"prompt": MATH}).json()
        assert plain["model"] == "A" and plain["ranking"] == ["A", "B", "C"]
        assert plain["scores"] == pytest.approx({"A": 0.9, "B": 0.6, "C": 0.1})
        cheap = httpx.post(f"{proxy.url}/v1/route", json={"messages": [{"role": "user", "content": MATH}],
                                                          "cost_weight": 0.5}).json()
        assert cheap["model"] == "B"  # 0.9 - 0.5 < 0.6 - 0.05
        assert cheap["utilities"]["A"] == pytest.approx(0.4)
        # Per request through the chat API (extra_body), not forwarded to the upstream.
        assert ask(client(proxy), MATH, extra_body={"cost_weight": 0.5}).model == "B"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("failure", ["fail-a", "hang-a"])
def test_falls_back_to_the_next_best_candidate(upstream, stream, failure):
    before = upstream.server.config.app.state.received[failure]
    with BackgroundServer(create_app(KeywordRouter(), config(upstream, {"A": failure}))) as proxy:
        c = client(proxy)
        start = time.monotonic()
        if stream:
            assert streamed(c, MATH) == ({"B"}, f"up-b answers: {MATH}")
        else:
            assert ask(c, MATH).model == "B"
        assert time.monotonic() - start < 5  # a hung upstream is given up after its 1 s timeout
        metrics = httpx.get(f"{proxy.url}/metrics").text
    assert upstream.server.config.app.state.received[failure] == before + 1
    reason = "HTTP 500" if failure.startswith("fail") else "timeout"
    assert f'lookahead_fallbacks_total{{model="A",reason="{reason}"}} 1.0' in metrics


def test_circuit_breaker_skips_a_failing_upstream(upstream):
    cfg = config(upstream, {"A": "fail-cb"}, circuit_breaker={"failures": 2, "cooldown_s": 60})
    received = upstream.server.config.app.state.received
    with BackgroundServer(create_app(KeywordRouter(), cfg)) as proxy:
        c = client(proxy)
        for _ in range(4):
            assert ask(c, MATH).model == "B"
        assert received["fail-cb"] == 2  # open after two failures: A is no longer tried first
        assert httpx.get(f"{proxy.url}/health").json()["circuits"]["A"] == "open"


def test_circuit_breaker_states():
    now = [0.0]
    breaker = CircuitBreaker(ServeConfig.model_fields["circuit_breaker"].default.model_copy(
        update={"failures": 2, "cooldown_s": 10}), clock=lambda: now[0])
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.healthy()
    now[0] = 10
    assert breaker.state == "half-open" and breaker.healthy()
    breaker.before_call()
    assert not breaker.healthy()  # one trial at a time
    breaker.record_failure()
    assert breaker.state == "open"
    now[0] = 20
    breaker.before_call()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.healthy()


def test_when_every_upstream_fails_the_client_gets_a_502(upstream):
    cfg = config(upstream, {"A": "fail-1", "B": "fail-2", "C": "fail-3"}, max_attempts=2)
    received = upstream.server.config.app.state.received
    with BackgroundServer(create_app(KeywordRouter(), cfg)) as proxy:
        with pytest.raises(openai.APIStatusError) as info:
            ask(client(proxy), MATH)
    assert info.value.status_code == 502 and "A (HTTP 500), B (HTTP 500)" in info.value.message
    assert received["fail-3"] == 0  # max_attempts bounds the tries


def test_upstream_4xx_is_relayed_not_retried(upstream):
    cfg = config(upstream, {"A": "reject-a", "B": "b-after-reject"})
    with BackgroundServer(create_app(KeywordRouter(), cfg)) as proxy:
        with pytest.raises(openai.BadRequestError, match="bad parameter"):
            ask(client(proxy), MATH)
    assert upstream.server.config.app.state.received["b-after-reject"] == 0


def test_client_api_keys(upstream, tmp_path, monkeypatch):
    monkeypatch.setenv("PROXY_KEYS", "k-one, k-two")
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("# clients\nk-three\n")
    cfg = config(upstream, api_keys_env="PROXY_KEYS", api_keys_file=str(keys_file))
    with BackgroundServer(create_app(KeywordRouter(), cfg)) as proxy:
        for key in ("k-one", "k-two", "k-three"):
            assert ask(client(proxy, key), MATH).model == "A"
        for key in ("k-on", "wrong", "k-one k-two"):
            with pytest.raises(openai.AuthenticationError):
                ask(client(proxy, key), MATH)
        assert httpx.post(f"{proxy.url}/v1/route", json={"prompt": MATH}).status_code == 401
        for path in ("/v1/models", "/v1/models/A", "/metrics"):  # every endpoint needs a key ...
            assert httpx.get(f"{proxy.url}{path}").status_code == 401
            assert httpx.get(f"{proxy.url}{path}", headers={"authorization": "Bearer k-two"}).status_code == 200
        assert httpx.get(f"{proxy.url}/health").status_code == 200  # ... but the probes'


BAD_REQUESTS = [
    (b"{not json", 400, "invalid_json"),
    (b"[1, 2]", 400, "invalid_json"),
    (json.dumps({"model": "lookahead"}).encode(), 400, "invalid_request"),
    (json.dumps({"model": "lookahead", "messages": []}).encode(), 400, "invalid_request"),
    (json.dumps({"model": "lookahead", "messages": "hi"}).encode(), 400, "invalid_request"),
    (json.dumps({"model": "lookahead", "messages": [{"content": "no role"}]}).encode(), 400, "invalid_request"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(), 400, "invalid_request"),
    (json.dumps({"model": "lookahead", "messages": [{"role": "system", "content": "x"}]}).encode(),
     400, "invalid_request"),
    (json.dumps({"model": "lookahead", "cost_weight": -1,
                 "messages": [{"role": "user", "content": "x"}]}).encode(), 400, "invalid_request"),
    (json.dumps({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}).encode(),
     404, "model_not_found"),
    (json.dumps({"model": "lookahead", "messages": [{"role": "user", "content": "x" * 5000}]}).encode(),
     400, "context_length_exceeded"),
    (json.dumps({"model": "lookahead", "messages": [{"role": "user", "content": "x" * 20000}]}).encode(),
     413, "request_too_large"),
]


@pytest.mark.parametrize("body,status,code", BAD_REQUESTS)
def test_malformed_requests_get_openai_style_4xx(upstream, body, status, code):
    cfg = config(upstream, max_input_chars=4000, max_body_bytes=10_000)
    with BackgroundServer(create_app(KeywordRouter(), cfg)) as proxy:
        response = httpx.post(f"{proxy.url}/v1/chat/completions", content=body,
                              headers={"content-type": "application/json"})
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code and response.json()["error"]["message"]
        # The proxy still works afterwards.
        assert ask(client(proxy), MATH).model == "A"


def test_unknown_paths_and_methods_answer_json(upstream):
    with BackgroundServer(create_app(KeywordRouter(), config(upstream))) as proxy:
        missing = httpx.get(f"{proxy.url}/v1/nothing")
        assert missing.status_code == 404 and "error" in missing.json()
        assert httpx.get(f"{proxy.url}/v1/chat/completions").status_code == 405


@contextlib.contextmanager
def only_slot_taken(upstream):
    """A proxy with one slot, held by a request to a candidate that hangs (1 s timeout)."""
    cfg = config(upstream, {"A": "hang-slot"}, concurrency=1, queue_timeout_s=0.05, max_attempts=1)
    with BackgroundServer(create_app(KeywordRouter(), cfg)) as proxy:
        first = threading.Thread(target=lambda: httpx.post(
            f"{proxy.url}/v1/chat/completions", timeout=10,
            json={"model": "A", "messages": [{"role": "user", "content": "x"}]}))
        first.start()
        time.sleep(0.3)  # the first request holds the only slot while A hangs
        yield proxy, first


def test_concurrency_limit_answers_429(upstream):
    with only_slot_taken(upstream) as (proxy, first):
        with pytest.raises(openai.RateLimitError):
            ask(client(proxy), MATH)
        first.join()
        assert ask(client(proxy), MATH, model="B").model == "B"  # the slot was released


def test_route_endpoint_takes_a_slot_like_chat(upstream):
    """/v1/route runs the router, so it waits for a slot as chat completions do: with none free it
    gets the same 429 and error body, not a place in an unbounded line."""
    with only_slot_taken(upstream) as (proxy, first):
        refused = httpx.post(f"{proxy.url}/v1/route", json={"prompt": MATH})
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert refused.json()["error"]["code"] == "concurrency_limit"
        first.join()
        for _ in range(2):   # the first gave its slot back, or the second would be refused
            assert httpx.post(f"{proxy.url}/v1/route", json={"prompt": MATH}).json()["model"] == "A"


class BlockedRouter(KeywordRouter):
    """Scores only once ``go`` is set: prompts pile up in the router's queue meanwhile."""

    def __init__(self):
        super().__init__()
        self.go = threading.Event()

    def _score(self, prompts):
        self.go.wait(10)
        return super()._score(prompts)


def test_a_full_router_queue_refuses_with_503_not_500(upstream):
    router = BlockedRouter()
    with BackgroundServer(create_app(router, config(upstream, batch={"max_queue": 1}))) as proxy:
        answers = {}

        def route(name):
            answers[name] = httpx.post(f"{proxy.url}/v1/route", json={"prompt": MATH}, timeout=20)
        # The first prompt is being scored (blocked), the second waits in the queue: it is full.
        waiting = [threading.Thread(target=route, args=(n,)) for n in ("scored", "queued")]
        for thread in waiting:
            thread.start()
            time.sleep(0.3)
        refused = httpx.post(f"{proxy.url}/v1/route", json={"prompt": MATH}, timeout=20)
        chat = httpx.post(f"{proxy.url}/v1/chat/completions", timeout=20,
                          json={"model": "lookahead", "messages": [{"role": "user", "content": MATH}]})
        router.go.set()
        for thread in waiting:
            thread.join()
    for answer in (refused, chat):   # refused at once, in OpenAI's error shape
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "router_queue_full"
        assert "queue is full" in answer.json()["error"]["message"]
    assert [answers[n].json()["model"] for n in ("scored", "queued")] == ["A", "A"]


def test_route_batcher_queue_is_bounded():
    import asyncio

    from lookahead_router.serving.scoring import QueueFull, RouteBatcher
    router = BlockedRouter()

    async def main():
        batcher = RouteBatcher(router, {}, max_queue=2)
        first = asyncio.ensure_future(batcher.route(MATH, 0.0))
        await asyncio.sleep(0.1)   # taken by the worker, which blocks in the router
        queued = [asyncio.ensure_future(batcher.route(MATH, 0.0)) for _ in range(2)]
        await asyncio.sleep(0.1)
        with pytest.raises(QueueFull, match="2 prompts waiting"):
            await batcher.route(MATH, 0.0)
        assert batcher._queue.qsize() == 2   # refused, not queued
        router.go.set()
        decisions = await asyncio.gather(first, *queued)
        await batcher.close()
        return decisions
    assert [d.model for d in asyncio.run(main())] == ["A", "A", "A"]


def test_no_request_is_lost_under_concurrency_with_fallbacks(upstream, tmp_path):
    log = tmp_path / "requests.sqlite"
    # keep trying A: every maths request falls back; A fails at once, so a timeout that 48
    # concurrent clients on a loaded 2-core machine cannot hit keeps B from timing out too
    cfg = config(upstream, {"A": "fail-load"}, timeout_s=30.0, request_log=str(log),
                 circuit_breaker={"failures": 1000})
    app = create_app(KeywordRouter(), cfg)
    results, errors = [], []

    def one(i):
        try:
            prompt = f"{MATH} #{i}" if i % 2 else f"{CODE} #{i}"
            if i % 3:
                models, text = streamed(client(proxy), prompt)
                results.append((prompt, models.pop(), text))
            else:
                answer = ask(client(proxy), prompt)
                results.append((prompt, answer.model, answer.choices[0].message.content))
        except Exception as exc:  # noqa: BLE001  (the test counts every failure)
            errors.append(exc)

    with BackgroundServer(app) as proxy:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(48)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        metrics = httpx.get(f"{proxy.url}/metrics").text
    assert not errors and len(results) == 48
    for prompt, model, text in results:
        assert model == ("B" if "equation" in prompt else "C")
        assert text == f"up-{model.lower()} answers: {prompt}"
    assert 'lookahead_requests_total{cause="ok",model="B",status="200"} 24.0' in metrics
    rows = sqlite3.connect(log).execute(
        "SELECT status, chosen_model, fallbacks, prompt_sha256, prompt, scores FROM requests").fetchall()
    assert len(rows) == 48 and {r[0] for r in rows} == {200}
    assert sum(r[2] for r in rows) == 24  # every maths request fell back from A once
    assert all(r[3] == prompt_hash(r[4]) for r in rows)
    assert json.loads(rows[0][5]).keys() == set(CANDS)
    out = tmp_path / "prompts.jsonl"
    assert export_prompts(log, out) == 48
    assert {json.loads(line)["prompt"] for line in out.read_text().splitlines()} == {r[0] for r in results}


def replay_setup(tmp_path):
    """(dataset, config): every candidate replays a small routing dataset saved in ``tmp_path``."""
    from test_training import topic_dataset
    ds = topic_dataset(6)
    ds.save(tmp_path / "ds.parquet")
    return ds, ServeConfig.model_validate({"models": {c: {"replay": str(tmp_path / "ds.parquet")} for c in CANDS}})


def test_replay_backend_answers_with_recorded_responses(tmp_path):
    ds, cfg = replay_setup(tmp_path)
    prompt = ds.queries["prompt"][0]
    with BackgroundServer(create_app(KeywordRouter(), cfg)) as proxy:
        c = client(proxy)
        answer = ask(c, prompt)
        assert answer.model == "A" and answer.choices[0].message.content == ds.responses[0, 0]
        assert streamed(c, prompt, model="B") == ({"B"}, ds.responses[0, 1])
        with pytest.raises(openai.NotFoundError, match="no record"):
            ask(c, "a prompt the dataset never saw")


def test_config_errors_name_the_file_and_field(tmp_path, upstream):
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  A: {base_url: http://x/v1}\n  B: [unclosed\n")
    with pytest.raises(ConfigError, match=r"models.yaml:\d+: not valid YAML"):
        load_config(path)
    path.write_text("models:\n  A: {base_url: http://x/v1, prize_input: 3}\n")
    with pytest.raises(ConfigError, match="models.A.prize_input: Extra inputs"):
        load_config(path)
    path.write_text("models:\n  A: {price_input: 3}\n")
    with pytest.raises(ConfigError, match="exactly one of base_url"):
        load_config(path)
    path.write_text("models:\n  A: {base_url: http://x/v1}\nrequest_log: logs/r.sqlite\n")
    assert load_config(path).request_log == str(tmp_path / "logs/r.sqlite")  # relative to the file
    with pytest.raises(ConfigError, match=r"candidate\(s\) \['B', 'C'\] have no upstream"):
        create_app(KeywordRouter(), load_config(path))


@pytest.mark.parametrize("name, options", [("knn", {"k": 5}), ("linear", {}), ("domain", {})])
def test_a_saved_real_router_serves(upstream, tmp_path, name, options):
    """kNN and the two deployable references on the packaged MiniLM, saved and loaded as
    `lookahead serve` does (the domain router's domains: the prompts' topics as sources)."""
    from test_similarity_routers import CANDS as SIM_CANDS, CODE as CODE_PROMPTS, MATH as MATH_PROMPTS
    from test_similarity_routers import make_ds
    from lookahead_router.data.dataset import RoutingDataset
    from lookahead_router.routers.registry import make_router
    assert SIM_CANDS == CANDS
    ds = RoutingDataset.concat([make_ds(MATH_PROMPTS, np.array([[1.0, 0.3, 0.0]] * len(MATH_PROMPTS)), source="math"),
                                make_ds(CODE_PROMPTS, np.array([[0.0, 0.3, 1.0]] * len(CODE_PROMPTS)), source="code")])
    make_router(name, progress=False, **options).fit(ds).save(tmp_path / name)
    with BackgroundServer(create_app(Router.load(tmp_path / name), config(upstream))) as proxy:
        c = client(proxy)
        assert ask(c, "Solve 2x - 4 = 10 for x.").model == "A"
        assert streamed(c, "Write a Python function to merge two sorted lists.")[0] == {"C"}


def test_python_route_api_with_costs():
    router = KeywordRouter()
    plain = router.route([MATH, CODE])
    assert [d.model for d in plain] == ["A", "C"]
    assert plain[0].probabilities == pytest.approx({"A": 0.9, "B": 0.6, "C": 0.1})
    assert plain[0].ranking() == ["A", "B", "C"]
    # Costs in any unit are divided by the dearest: A costs 1.0, B 0.1, C 0 (relative).
    costs = {"A": 20.0, "B": 2.0, "C": 0.0}
    cheap = router.route([MATH, CODE], cost_weight=0.5, costs=costs)
    assert [d.model for d in cheap] == ["B", "C"]
    assert cheap[0].utilities == pytest.approx({"A": 0.4, "B": 0.55, "C": 0.1})
    assert router.route([MATH], cost_weight=0.5, costs=[[20.0, 2.0, 0.0]])[0].model == "B"
    from lookahead_router.routers.base import RouterError
    from lookahead_router.routers.cost import CostError
    with pytest.raises(RouterError, match=r"no entry for candidate\(s\) \['C'\]"):
        router.route([MATH], cost_weight=0.5, costs={"A": 1.0, "B": 1.0})
    with pytest.raises(CostError, match="needs the candidates' costs"):
        router.route([MATH], cost_weight=0.5)
    with pytest.raises(CostError, match="cost_weight must be"):
        router.route([MATH], cost_weight=-1, costs=costs)
