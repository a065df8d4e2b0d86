"""The proxy under real clients and bad input: every defect found by trying it as a user would,
reproduced with the official `openai` client or raw httpx, and a fuzz test of the request schema."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from lookahead_router.catalogue import CircuitBreakerConfig
from lookahead_router.serving.app import create_app
from lookahead_router.serving.fake_upstream import BackgroundServer, create_fake_upstream
from lookahead_router.serving.fallback import FallbackChain
from lookahead_router.serving.metrics import ProxyMetrics
from lookahead_router.serving.upstream import UpstreamError, UpstreamRejected
from test_serving import CODE, MATH, KeywordRouter, ask, client, config, replay_setup

SURROGATE = b'{"model": "%s", "messages": [{"role": "user", "content": "hi \\ud83d"}]}'
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def upstream():
    with BackgroundServer(create_fake_upstream(chunks=4)) as server:
        yield server


def metric(proxy, name: str, **labels) -> float:
    """A sample's value from the proxy's /metrics (0 when absent)."""
    text = httpx.get(f"{proxy.url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def log_rows(proxy, path) -> list[dict]:
    proxy.server.config.app.state.proxy.log.flush()
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    return [dict(r) for r in db.execute("SELECT * FROM requests ORDER BY time")]


async def post_many(url: str, bodies: list[bytes]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200)) as c:
        return await asyncio.gather(*(c.post(url, content=b, headers=JSON) for b in bodies))


def test_a_lone_surrogate_is_refused_and_fails_no_other_request(upstream, tmp_path):
    cfg = config(upstream, request_log=str(tmp_path / "log.sqlite"), batch={"max_wait_ms": 20})
    with BackgroundServer(create_app(KeywordRouter(), cfg)) as proxy:
        good = [json.dumps({"model": "lookahead", "messages": [{"role": "user", "content": f"{MATH} {i}"}]}
                           ).encode() for i in range(100)]
        bad = [SURROGATE % b"lookahead", SURROGATE % b"A"]  # routed and pass-through
        responses = asyncio.run(post_many(f"{proxy.url}/v1/chat/completions", good[:50] + bad + good[50:]))
        statuses = [r.status_code for r in responses]
        assert statuses == [200] * 50 + [400, 400] + [200] * 50
        assert responses[50].json()["error"]["code"] == "invalid_unicode"
        assert "surrogate" in responses[51].json()["error"]["message"]
        rows = log_rows(proxy, tmp_path / "log.sqlite")
    assert sorted(r["status"] for r in rows) == [200] * 100 + [400, 400]


class PoisonRouter(KeywordRouter):
    """Fails on one prompt, as a router bug or a tokenizer edge case would."""

    def _score(self, prompts):
        if any("poison" in p for p in prompts):
            raise ValueError("cannot score this prompt")
        return super()._score(prompts)


def test_a_prompt_that_breaks_the_router_fails_only_its_own_request(upstream):
    cfg = config(upstream, batch={"max_wait_ms": 200, "max_size": 64})
    with BackgroundServer(create_app(PoisonRouter(), cfg)) as proxy:
        bodies = [json.dumps({"model": "lookahead", "messages": [{"role": "user", "content": p}]}).encode()
                  for p in [f"{CODE} {i}" for i in range(30)] + ["poison"]]
        responses = asyncio.run(post_many(f"{proxy.url}/v1/chat/completions", bodies))
        assert [r.status_code for r in responses] == [200] * 30 + [500]
        assert {r.json()["model"] for r in responses[:30]} == {"C"}
        # They shared forward passes: fewer batches than requests.
        assert metric(proxy, "lookahead_router_batch_size_count") < 31
        assert metric(proxy, "lookahead_requests_total", status="500", cause="internal_error") == 1


def test_stream_null_and_other_nulls_are_accepted(upstream):
    with BackgroundServer(create_app(KeywordRouter(), config(upstream))) as proxy:
        body = {"model": "lookahead", "stream": None, "n": None, "cost_weight": None,
                "messages": [{"role": "user", "content": MATH}]}
        response = httpx.post(f"{proxy.url}/v1/chat/completions", json=body)
        assert response.status_code == 200 and response.json()["model"] == "A"


def test_mid_stream_disconnects_are_logged_as_499_and_free_everything(upstream, tmp_path):
    log = tmp_path / "log.sqlite"
    cfg = config(upstream, {"A": "slow-a"}, request_log=str(log))
    fake = upstream.server.config.app.state

    async def abandon(c: httpx.AsyncClient):
        body = {"model": "A", "stream": True, "messages": [{"role": "user", "content": MATH}]}
        async with c.stream("POST", f"{proxy.url}/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            seen = 0
            while seen < 2:  # two chunks, then "stop generating"
                seen += (await lines.__anext__()).startswith("data:")

    async def fifty():
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=60)) as c:
            await asyncio.gather(*(abandon(c) for _ in range(50)))

    with BackgroundServer(create_app(KeywordRouter(), cfg)) as proxy:
        start = time.monotonic()
        asyncio.run(fifty())
        deadline = time.monotonic() + 5
        while metric(proxy, "lookahead_in_flight_requests") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(proxy, "lookahead_in_flight_requests") == 0
        assert time.monotonic() - start < 4  # not the 5 s the upstream would have streamed for
        assert metric(proxy, "lookahead_requests_total", status="499",
                      cause="client_aborted_after_first_byte") == 50
        rows = log_rows(proxy, log)
        assert fake.open == 0  # every upstream stream was closed
    assert len(rows) == 50 and {(r["status"], r["cause"], r["chosen_model"]) for r in rows} == {
        (499, "client_aborted_after_first_byte", "A")}


def test_a_client_that_leaves_before_the_first_byte_frees_its_slot_at_once(upstream, tmp_path):
    log = tmp_path / "log.sqlite"
    cfg = config(upstream, {"A": "hang-early"}, request_log=str(log), concurrency=1,
                 queue_timeout_s=0.5, max_attempts=1)
    cfg.models["A"].timeout_s = 30  # the upstream would hold the slot for 30 s
    fake = upstream.server.config.app.state
    with BackgroundServer(create_app(KeywordRouter(), cfg)) as proxy:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{proxy.url}/v1/chat/completions", timeout=0.5,
                       json={"model": "A", "messages": [{"role": "user", "content": "x"}]})
        time.sleep(0.3)
        assert ask(client(proxy), MATH, model="B").model == "B"  # the only slot is free again
        rows = log_rows(proxy, log)
        assert fake.open == 0  # the upstream call was cancelled
    assert [(r["status"], r["cause"]) for r in rows] == [(499, "client_aborted_before_first_byte"), (200, "ok")]


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_auth_error_is_the_deployments_fault(upstream, stream):
    cfg = config(upstream, {"A": "denied-a"})
    with BackgroundServer(create_app(KeywordRouter(), cfg)) as proxy:
        c = client(proxy)
        if stream:
            assert {ch.model for ch in ask(c, MATH, stream=True)} == {"B"}  # routed: falls back
        else:
            assert ask(c, MATH).model == "B"
        with pytest.raises(openai.APIStatusError) as info:  # pass-through: 502 naming A
            ask(c, MATH, model="A", stream=stream)
        assert info.value.status_code == 502 and "A (HTTP 401)" in info.value.message
        assert metric(proxy, "lookahead_fallbacks_total", model="A", reason="HTTP 401") == 1


def test_an_upstream_answer_that_is_not_a_completion_falls_back(upstream):
    with BackgroundServer(create_app(KeywordRouter(), config(upstream, {"A": "garbage-a"}))) as proxy:
        assert ask(client(proxy), MATH).model == "B"
        assert metric(proxy, "lookahead_fallbacks_total", model="A",
                      reason="a completion that is not a JSON object") == 1


def test_a_truncated_upstream_stream_ends_with_an_error_event(upstream, tmp_path):
    log = tmp_path / "log.sqlite"
    cfg = config(upstream, {"A": "truncate-a"}, request_log=str(log))
    with BackgroundServer(create_app(KeywordRouter(), cfg)) as proxy:
        body = {"model": "A", "stream": True, "messages": [{"role": "user", "content": MATH}]}
        with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json=body) as response:
            events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        assert "[DONE]" not in events and len(events) == 3
        assert json.loads(events[-1])["error"]["code"] == "upstream_failed_mid_stream"
        with pytest.raises(openai.APIError, match="failed mid-stream"):  # the official client raises
            list(ask(client(proxy), MATH, model="A", stream=True))
        rows = log_rows(proxy, log)
    assert {(r["status"], r["cause"]) for r in rows} == {(502, "upstream_failed_mid_stream")}


class StubUpstream:
    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)

    async def complete(self, body):
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def test_every_trial_call_settles_the_circuit():
    async def scenario():
        a = StubUpstream(UpstreamError("HTTP 500"), UpstreamRejected(400, {"error": {}}),
                         UpstreamError("HTTP 500"), asyncio.CancelledError(), {"ok": True})
        chain = FallbackChain({"A": a}, CircuitBreakerConfig(failures=1, cooldown_s=0.05), 1, ProxyMetrics())
        breaker = chain.breakers["A"]
        with pytest.raises(Exception):
            await chain.first_answer(["A"], {}, False, [])
        assert breaker.state == "open"
        await asyncio.sleep(0.06)
        with pytest.raises(UpstreamRejected):  # the half-open trial answered 4xx: the upstream is up
            await chain.first_answer(["A"], {}, False, [])
        assert breaker.state == "closed" and breaker.healthy()
        with pytest.raises(Exception):
            await chain.first_answer(["A"], {}, False, [])
        await asyncio.sleep(0.06)
        with pytest.raises(asyncio.CancelledError):  # the trial abandoned: the next call is the trial
            await chain.first_answer(["A"], {}, False, [])
        assert breaker.state == "half-open" and breaker.healthy()
        assert await chain.first_answer(["A"], {}, False, []) == ("A", {"ok": True})
        assert breaker.state == "closed"
    asyncio.run(scenario())


def test_rejections_are_logged_and_counted(upstream, tmp_path, monkeypatch):
    monkeypatch.setenv("PROXY_KEYS", "k1")
    log = tmp_path / "log.sqlite"
    cfg = config(upstream, request_log=str(log), api_keys_env="PROXY_KEYS", max_body_bytes=2000)
    url_headers = {"authorization": "Bearer k1", **JSON}
    cases = [  # (body, headers, status, cause)
        (b'{"model": "lookahead"}', JSON, 401, "invalid_api_key"),
        (b"{oops", url_headers, 400, "invalid_json"),
        (json.dumps({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}).encode(),
         url_headers, 404, "model_not_found"),
        (b'{"model": "lookahead", "messages": [{"role": "user", "content": "' + b"x" * 3000 + b'"}]}',
         url_headers, 413, "request_too_large"),
        (b'{"model": "A", "messages": [{"role": "user", "content": "x"}]}',
         {"authorization": "Bearer k1", "content-type": "text/plain"}, 415, "unsupported_media_type"),
    ]
    with BackgroundServer(create_app(KeywordRouter(), cfg)) as proxy:
        for body, headers, status, cause in cases:
            response = httpx.post(f"{proxy.url}/v1/chat/completions", content=body, headers=headers)
            assert response.status_code == status and response.json()["error"]["message"]
        text = httpx.get(f"{proxy.url}/metrics", headers={"authorization": "Bearer k1"}).text
        rows = log_rows(proxy, log)
    assert [(r["status"], r["cause"]) for r in rows] == [(s, c) for _, _, s, c in cases]
    for _, _, status, cause in cases:
        assert f'lookahead_requests_total{{cause="{cause}",model="none",status="{status}"}} 1.0' in text


def test_models_retrieve_and_cors(upstream):
    origin = "https://app.example"
    preflight = {"origin": origin, "access-control-request-method": "POST",
                 "access-control-request-headers": "authorization, content-type"}
    with BackgroundServer(create_app(KeywordRouter(), config(upstream, cors_origins=[origin]))) as proxy:
        c = client(proxy)
        assert c.models.retrieve("B").id == "B" and c.models.retrieve("lookahead").id == "lookahead"
        with pytest.raises(openai.NotFoundError):
            c.models.retrieve("gpt-9")
        allowed = httpx.options(f"{proxy.url}/v1/chat/completions", headers=preflight)
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == origin
        answer = httpx.post(f"{proxy.url}/v1/chat/completions", headers={"origin": origin},
                            json={"model": "A", "messages": [{"role": "user", "content": "x"}]})
        assert answer.headers["access-control-allow-origin"] == origin
        assert "x-lookahead-model" in answer.headers["access-control-expose-headers"]
        other = httpx.options(f"{proxy.url}/v1/chat/completions", headers={**preflight, "origin": "https://evil"})
        assert "access-control-allow-origin" not in other.headers
    with BackgroundServer(create_app(KeywordRouter(), config(upstream))) as proxy:  # off by default
        assert "access-control-allow-origin" not in httpx.options(
            f"{proxy.url}/v1/chat/completions", headers=preflight).headers


def test_replay_honours_n_and_include_usage(tmp_path):
    ds, cfg = replay_setup(tmp_path)
    prompt = ds.queries["prompt"][0]
    with BackgroundServer(create_app(KeywordRouter(), cfg)) as proxy:
        c = client(proxy)
        answer = ask(c, prompt, model="A", n=2)
        assert [ch.index for ch in answer.choices] == [0, 1]
        assert {ch.message.content for ch in answer.choices} == {ds.responses[0, 0]}
        chunks = list(ask(c, prompt, model="B", stream=True, n=2, stream_options={"include_usage": True}))
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
        assert all(ch.usage is None for ch in chunks[:-1])
        for i in (0, 1):
            text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices and ch.choices[0].index == i)
            assert text == ds.responses[0, 1]


# ---- fuzzing: no input may produce a 500 ------------------------------------------------------
TEXT = st.one_of(st.text(max_size=30), st.sampled_from(["hi \ud83d", "\udfff", "x\x00y", MATH]))
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                           max_leaves=8)
CONTENT = st.one_of(TEXT, st.none(), st.integers(), st.lists(st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", 3]), "text": JSON_VALUES}),
    JSON_VALUES), max_size=3))
MESSAGE = st.one_of(st.fixed_dictionaries(
    {"role": st.one_of(st.sampled_from(["user", "system", "assistant", "tool"]), JSON_VALUES), "content": CONTENT}),
    JSON_VALUES)
CHAT_BODY = st.fixed_dictionaries(
    {"model": st.one_of(st.sampled_from(["lookahead", "A", "B", "gpt-9"]), JSON_VALUES),
     "messages": st.one_of(st.lists(MESSAGE, max_size=3), JSON_VALUES)},
    optional={"stream": st.one_of(st.booleans(), JSON_VALUES), "n": JSON_VALUES,
              "cost_weight": st.one_of(st.floats(allow_nan=False), JSON_VALUES),
              "stream_options": JSON_VALUES, "temperature": JSON_VALUES})


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(body=st.one_of(CHAT_BODY, JSON_VALUES), raw=st.one_of(st.none(), st.binary(max_size=40)))
def test_fuzzed_requests_never_get_a_500(fuzz_proxy, body, raw):
    proxy, sent = fuzz_proxy
    content = raw if raw is not None else json.dumps(body).encode()
    for path in ("/v1/chat/completions", "/v1/route"):
        response = httpx.post(f"{proxy.url}{path}", content=content, headers=JSON, timeout=10)
        assert response.status_code < 500 or response.status_code == 502, (content, response.text)
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    sent.append(content)


# ---- nesting: a field nested past 64 levels is a 400 naming it, wherever it is ----------------
def nested(kinds: str, leaf: str = "1") -> str:
    """JSON text nesting an array ("[") or an object ("{", as {"k": ...}) per character of
    ``kinds`` around ``leaf``; written as text, since serialisers stop far earlier."""
    opening = "".join("[" if k == "[" else '{"k": ' for k in kinds)
    return opening + leaf + "".join("]" if k == "[" else "}" for k in reversed(kinds))


def test_deep_json_gets_a_400_naming_the_field_and_disturbs_no_other_request(upstream, tmp_path):
    log = tmp_path / "log.sqlite"
    with BackgroundServer(create_app(KeywordRouter(), config(upstream, request_log=str(log)))) as proxy:
        good = json.dumps({"model": "lookahead", "messages": [{"role": "user", "content": MATH}]}).encode()
        deep = [('{"model": "lookahead", "messages": [{"role": "user", "content": "hi"}], "metadata": '
                 + nested("[{" * (depth // 2)) + "}").encode() for depth in (900, 3000)]
        bodies = [good] * 30 + deep * 5
        responses = asyncio.run(post_many(f"{proxy.url}/v1/chat/completions", bodies))
        assert [r.status_code for r in responses[:30]] == [200] * 30
        assert all(r.json()["model"] == "A" for r in responses[:30])
        for r in responses[30:]:   # 900 levels (orjson parses them) and 3000 (past its 1024 limit)
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert error["param"] == "metadata" and error["code"] == "nesting_too_deep"
            assert error["message"] == ("'metadata' nests arrays or objects more than 64 levels deep; "
                                        "at most 64 are accepted")
        route = httpx.post(f"{proxy.url}/v1/route", headers=JSON, content=(
            '{"messages": [{"role": "user", "content": ' + nested("[" * 900) + "}]}").encode())
        assert route.status_code == 400 and route.json()["error"]["param"] == "messages"
        statuses = [row["status"] for row in log_rows(proxy, log)]
        assert sorted(statuses) == [200] * 30 + [400] * 10    # every chat request logged, once


CHAT_FIELDS = ["model", "messages", "stream", "n", "stream_options", "temperature", "cost_weight", "metadata",
               "tools", "user", "messages.0.content", "messages.0.role", "messages.0.name"]
ROUTE_FIELDS = ["prompt", "messages", "cost_weight", "messages.0.content", "other"]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=st.data())
def test_any_field_nested_past_the_limit_is_refused_and_nothing_gets_a_500(fuzz_proxy, data):
    proxy, sent = fuzz_proxy
    path = data.draw(st.sampled_from(["/v1/chat/completions", "/v1/route"]))
    where = data.draw(st.sampled_from(CHAT_FIELDS if path.endswith("completions") else ROUTE_FIELDS))
    depth = data.draw(st.one_of(st.integers(1, 70), st.integers(71, 1500)))
    kinds = data.draw(st.text(alphabet="[{", min_size=depth, max_size=depth))
    leaf = data.draw(st.sampled_from(["1", '"x"', "null", "[]", "{}"]))
    value = nested(kinds, leaf)
    field, levels = where.split(".")[0], depth + (leaf in ("[]", "{}"))
    body = {"model": "lookahead", "messages": [{"role": "user", "content": MATH}]} if path.endswith("completions") \
        else {"prompt": MATH}
    if where.startswith("messages."):   # inside the first message: two levels more (its list, itself)
        message = {k: v for k, v in {"role": "user", "content": MATH}.items() if k != where.split(".")[2]}
        value = json.dumps(message)[:-1] + (", " if message else "") + f'"{where.split(".")[2]}": {value}}}'
        value, levels = f"[{value}]", levels + 2
    body.pop(field, None)
    content = (json.dumps(body)[:-1] + (", " if body else "") + f'"{field}": {value}}}').encode()
    response = httpx.post(f"{proxy.url}{path}", content=content, headers=JSON, timeout=10)
    assert response.status_code < 500 or response.status_code == 502, (where, levels, response.text)
    error = response.json().get("error") if response.status_code >= 400 else None
    if levels > 64:
        assert response.status_code == 400 and error["code"] == "nesting_too_deep" and error["param"] == field
    else:
        assert error is None or error["code"] != "nesting_too_deep", error
    if path.endswith("completions"):
        sent.append(content)


@pytest.fixture(scope="module")
def fuzz_proxy(upstream, tmp_path_factory):
    log = tmp_path_factory.mktemp("fuzz") / "log.sqlite"
    cfg = config(upstream, request_log=str(log), cost_weight=0.1)
    sent: list[bytes] = []
    with BackgroundServer(create_app(KeywordRouter(), cfg)) as proxy:
        yield proxy, sent
        # Every chat request the fuzzer sent is in the request log.
        assert len(log_rows(proxy, log)) == len(sent) > 0


def test_an_older_request_log_gains_the_new_columns_and_keeps_its_rows(tmp_path):
    from lookahead_router.serving.request_log import COLUMNS, RequestLog
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE requests (time REAL, request_id TEXT, status INTEGER)")
        db.execute("INSERT INTO requests VALUES (1.0, 'old', 200)")
    log = RequestLog(path)
    log.record({"request_id": "new", "status": 499, "cause": "client_aborted_after_first_byte"})
    log.close()
    db = sqlite3.connect(path)
    assert {r[1] for r in db.execute("PRAGMA table_info(requests)")} == set(COLUMNS)
    assert db.execute("SELECT request_id, status, cause FROM requests ORDER BY time").fetchall() == [
        ("new", 499, "client_aborted_after_first_byte"), ("old", 200, None)]
