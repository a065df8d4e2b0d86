"""The backends a candidate's requests go to: an OpenAI-compatible server over HTTP, or the replay
backend (recorded responses from a routing dataset), plus a circuit breaker per upstream.

Both backends speak the same two calls:
    await backend.complete(body)   -> the chat.completion JSON (a dict)
    backend.stream(body)           -> async iterator of chat.completion.chunk dicts
Failures that another candidate might not have (connection refused, timeout, 5xx, 429) raise
UpstreamError, and the proxy falls back; a 4xx caused by the request itself raises
UpstreamRejected, which the proxy relays to the client unchanged.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import AsyncIterator

import httpx

from lookahead_router.routers.cost import estimate_tokens
from lookahead_router.serving.config import CircuitBreakerConfig, UpstreamConfig


class UpstreamError(Exception):
    """The upstream failed in a way worth retrying elsewhere."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class UpstreamRejected(Exception):
    """The upstream refused the request itself (4xx): the client gets the same answer."""

    def __init__(self, status: int, body: dict):
        super().__init__(f"upstream answered {status}")
        self.status, self.body = status, body


class HTTPUpstream:
    """An OpenAI-compatible server (vLLM, TGI, llama.cpp, a hosted API). All upstreams share one
    pooled ``httpx.AsyncClient``; the timeout bounds the wait for each byte, so a hung upstream
    is abandoned after ``timeout_s`` of silence."""

    def __init__(self, name: str, config: UpstreamConfig, client: httpx.AsyncClient):
        self.name, self.config, self.client = name, config, client
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self.timeout = httpx.Timeout(config.timeout_s)

    def _request(self, body: dict, stream: bool) -> httpx.Request:
        headers = {}
        key = self.config.api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        payload = {**body, "model": self.config.model or self.name, "stream": stream}
        return self.client.build_request("POST", self.url, json=payload, headers=headers,
                                         timeout=self.timeout)

    async def complete(self, body: dict) -> dict:
        with _transport_errors():
            response = await self.client.send(self._request(body, stream=False))
        _raise_for_status(response.status_code, response.content)
        try:
            return response.json()
        except ValueError as exc:
            raise UpstreamError("invalid JSON from upstream") from exc

    async def stream(self, body: dict) -> AsyncIterator[dict]:
        with _transport_errors():
            response = await self.client.send(self._request(body, stream=True), stream=True)
        try:
            with _transport_errors():
                if response.status_code >= 400:
                    _raise_for_status(response.status_code, await response.aread())
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # SSE comments, event names and blank separators
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    try:
                        yield json.loads(data)
                    except ValueError as exc:
                        raise UpstreamError("invalid JSON event from upstream") from exc
        finally:
            await response.aclose()


@contextmanager
def _transport_errors():
    """httpx's timeouts and connection failures, as the UpstreamError the proxy falls back on."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise UpstreamError("timeout") from exc
    except httpx.HTTPError as exc:
        raise UpstreamError(f"connection: {type(exc).__name__}") from exc


def _raise_for_status(status: int, content: bytes) -> None:
    if status < 400:
        return
    if status >= 500 or status == 429:
        raise UpstreamError(f"HTTP {status}")
    try:
        body = json.loads(content)
    except ValueError:
        body = {"error": {"message": content.decode("utf-8", "replace")[:500],
                          "type": "upstream_error", "code": None, "param": None}}
    raise UpstreamRejected(status, body)


class ReplayUpstream:
    """Answers with the response the candidate gave to the same prompt in a routing dataset (the
    last user message must equal a dataset prompt). For demos and tests without an LLM server."""

    _datasets: dict[Path, tuple[dict[str, int], list[str], object]] = {}

    def __init__(self, name: str, config: UpstreamConfig):
        from lookahead_router.data.dataset import RoutingDataset
        from lookahead_router.serving.batch import prompt_of
        self.name, self.config, self._prompt_of = name, config, prompt_of
        path = Path(config.replay)
        if path not in self._datasets:  # several candidates usually replay one file: load it once
            ds = RoutingDataset.load(path)
            index = {p: i for i, p in enumerate(ds.queries["prompt"])}
            self._datasets[path] = (index, list(ds.candidates), ds.responses)
        self.index, candidates, self.responses = self._datasets[path]
        replayed = config.model or name
        if replayed not in candidates:
            raise ValueError(f"replay: {path} has no candidate {replayed!r} (it has {candidates})")
        self.column = candidates.index(replayed)

    def _answer(self, body: dict) -> str:
        prompt = self._prompt_of(body.get("messages") or [])
        row = self.index.get(prompt)
        answer = None if row is None else self.responses[row, self.column]
        if answer is None:
            what = "this prompt" if row is None else "this prompt's response"
            raise UpstreamRejected(404, {"error": {
                "message": f"replay backend: {self.config.replay} has no record of {what} for {self.name}",
                "type": "invalid_request_error", "code": "replay_miss", "param": "messages"}})
        return str(answer)

    def _usage(self, body: dict, answer: str) -> dict:
        prompt = sum(estimate_tokens(str(m.get("content") or "")) for m in body.get("messages") or [])
        completion = estimate_tokens(answer)
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}

    async def complete(self, body: dict) -> dict:
        answer = self._answer(body)
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
                "created": int(time.time()), "model": self.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                             "finish_reason": "stop"}],
                "usage": self._usage(body, answer)}

    async def stream(self, body: dict) -> AsyncIterator[dict]:
        answer = self._answer(body)
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": self.name}
        yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None}]}
        for start in range(0, len(answer), 64):
            yield {**base, "choices": [{"index": 0, "delta": {"content": answer[start:start + 64]},
                                        "finish_reason": None}]}
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}


def make_upstream(name: str, config: UpstreamConfig, client: httpx.AsyncClient):
    if config.local is not None:
        raise ValueError(f"models.{name}: local models only generate (lookahead collect generate); "
                         "serve them behind an OpenAI-compatible server (e.g. vLLM) and give base_url")
    return ReplayUpstream(name, config) if config.replay is not None else HTTPUpstream(name, config, client)


class CircuitBreaker:
    """Closed → open after ``failures`` consecutive failures; open → half-open after ``cooldown_s``
    (one trial call); the trial's success closes it, its failure opens it again. While open, the
    proxy tries the candidate only after every healthy one."""

    def __init__(self, config: CircuitBreakerConfig, clock=time.monotonic):
        self.config, self.clock = config, clock
        self.failures, self.opened_at, self.trial_running = 0, None, False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.config.cooldown_s else "open"

    def healthy(self) -> bool:
        """May a call go through now (closed, or half-open with no trial under way)?"""
        state = self.state
        return state == "closed" or (state == "half-open" and not self.trial_running)

    def before_call(self) -> None:
        if self.state == "half-open":
            self.trial_running = True

    def record_success(self) -> None:
        self.failures, self.opened_at, self.trial_running = 0, None, False

    def record_failure(self) -> None:
        self.failures += 1
        if self.trial_running or self.failures >= self.config.failures:
            self.opened_at = self.clock()
        self.trial_running = False
