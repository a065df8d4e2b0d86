"""The OpenAI-compatible routing proxy (FastAPI).

    POST /v1/chat/completions   model "lookahead": the router picks the candidate; a candidate's
                                name goes straight to it. Streaming (SSE) and non-streaming.
    POST /v1/route              the router's scores and decision, without generating
    GET  /v1/models, /health, /metrics (Prometheus)

A routed request tries the candidates from the best utility down (at most ``max_attempts``, those
with an open circuit last) and falls back when an upstream fails before its first byte. The
answer's ``model`` field and the ``x-lookahead-model`` header name the candidate that answered.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from lookahead_router.routers.base import Router
from lookahead_router.routers.cost import RouteDecision, decide, expected_costs
from lookahead_router.serving.batch import content_text, prompt_of
from lookahead_router.serving.config import ConfigError, ServeConfig
from lookahead_router.serving.metrics import ProxyMetrics
from lookahead_router.serving.protocol import (ChatRequest, OpenAIError, RouteRequest, error_response,
                                               parse, read_json)
from lookahead_router.serving.request_log import RequestLog
from lookahead_router.serving.scoring import ScoreBatcher
from lookahead_router.serving.upstream import (CircuitBreaker, UpstreamError, UpstreamRejected,
                                               make_upstream)

ROUTED_MODEL = "lookahead"
logger = logging.getLogger("lookahead_router.serving")


class Proxy:
    """Everything one running proxy holds: the router, the upstreams and their circuit breakers,
    the shared HTTP client, the concurrency limit, metrics and the request log."""

    def __init__(self, router: Router, config: ServeConfig):
        missing = [c for c in router.candidates if c not in config.models]
        if missing:
            raise ConfigError(f"models: the router's candidate(s) {missing} have no upstream "
                              f"(the config names {list(config.models)})")
        self.router, self.config = router, config
        self.candidates = list(router.candidates)
        self.prices = config.prices()
        self.keys = [k.encode() for k in config.client_keys()]
        self.metrics = ProxyMetrics()
        self.breakers = {name: CircuitBreaker(config.circuit_breaker) for name in config.models}
        self.slots = asyncio.Semaphore(config.concurrency)
        pool = config.concurrency + 16
        # Idle upstream connections are dropped after 4 s, before servers' usual 5 s keep-alive
        # ends, so the proxy never sends on a connection the upstream is closing.
        self.client = httpx.AsyncClient(limits=httpx.Limits(
            max_connections=pool, max_keepalive_connections=pool, keepalive_expiry=4.0))
        self.upstreams = {name: make_upstream(name, up, self.client) for name, up in config.models.items()}
        self.log = RequestLog(config.request_log, config.log_prompts) if config.request_log else None
        self.batcher = ScoreBatcher(router, config.batch.max_size, config.batch.max_wait_ms,
                                    on_batch=self.metrics.router_batch.observe)

    async def stop(self) -> None:
        await self.batcher.close()
        await self.client.aclose()
        if self.log is not None:
            self.log.close()

    # ---- checks ----------------------------------------------------------------------------
    def authorize(self, request: Request) -> None:
        if not self.keys:
            return
        given = request.headers.get("authorization", "")
        token = given[7:].strip().encode() if given.lower().startswith("bearer ") else b""
        # Compare with every key, always: the time taken says nothing about which key matched.
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(token, key)
        if not matched:
            raise OpenAIError(401, "Incorrect API key provided.", code="invalid_api_key")

    def _check_length(self, messages) -> None:
        try:
            chars = sum(len(content_text(m.content)) for m in messages if m.content is not None)
        except ValueError as exc:
            raise OpenAIError(400, f"messages: {exc}", code="invalid_request", param="messages")
        if chars > self.config.max_input_chars:
            raise OpenAIError(400, f"the messages hold {chars} characters; this proxy accepts at most "
                              f"{self.config.max_input_chars}", code="context_length_exceeded",
                              param="messages")

    async def _acquire_slot(self) -> None:
        try:
            await asyncio.wait_for(self.slots.acquire(), self.config.queue_timeout_s)
        except asyncio.TimeoutError:
            raise OpenAIError(429, f"more than {self.config.concurrency} requests in flight; retry "
                              "later", type="rate_limit_error", code="concurrency_limit")

    # ---- routing ---------------------------------------------------------------------------
    async def decide(self, prompt: str, cost_weight: float | None) -> tuple[RouteDecision, float]:
        weight = self.config.cost_weight if cost_weight is None else cost_weight
        start = time.perf_counter()
        scores = await self.batcher.score(prompt)
        seconds = time.perf_counter() - start
        self.metrics.router_latency.observe(seconds)
        costs = expected_costs(self.prices, self.candidates, [prompt]) if weight > 0 else None
        return decide(self.candidates, scores[None], costs, weight)[0], seconds

    def attempt_order(self, decision: RouteDecision) -> list[str]:
        ranking = decision.ranking()
        healthy = [c for c in ranking if self.breakers[c].healthy()]
        return (healthy + [c for c in ranking if c not in healthy])[: self.config.max_attempts]

    # ---- chat completions ------------------------------------------------------------------
    async def chat(self, request: Request) -> Response:
        arrived = time.perf_counter()
        self.authorize(request)
        body = await read_json(request, self.config.max_body_bytes)
        chat = parse(ChatRequest, body)
        self._check_length(chat.messages)
        forward = {k: v for k, v in body.items() if k != "cost_weight"}
        routed = chat.model == ROUTED_MODEL
        if not routed and chat.model not in self.upstreams:
            raise OpenAIError(404, f"The model '{chat.model}' does not exist; this proxy serves "
                              f"{[ROUTED_MODEL, *self.upstreams]}", code="model_not_found", param="model")
        try:
            prompt = prompt_of(body["messages"])
        except ValueError as exc:
            if routed:
                raise OpenAIError(400, str(exc), code="invalid_request", param="messages")
            prompt = None  # a pass-through request needs no user message
        await self._acquire_slot()
        record = {"request_id": uuid.uuid4().hex, "time": time.time(), "prompt": prompt,
                  "requested_model": chat.model, "stream": int(chat.stream), "attempts": []}
        self.metrics.in_flight.inc()
        finish = _Once(lambda: self._finish(record, arrived))
        try:
            if routed:
                decision, seconds = await self.decide(prompt, chat.cost_weight)
                record.update(scores=decision.probabilities, cost_weight=decision.cost_weight,
                              router_ms=seconds * 1000)
                order = self.attempt_order(decision)
            else:
                order = [chat.model]
            name, result = await self._first_answer(order, forward, chat.stream, record)
            record["chosen_model"] = name
            record["first_byte_ms"] = (time.perf_counter() - arrived) * 1000
            self.metrics.first_byte.labels(name).observe(time.perf_counter() - arrived)
            headers = {"x-lookahead-model": name, "x-lookahead-attempts": str(len(record["attempts"]) + 1)}
            if not chat.stream:
                result["model"] = name
                record["status"] = 200
                return JSONResponse(result, headers=headers)
            first, events = result
            response = _RelayResponse(self._relay(name, first, events, record), on_close=finish,
                                      events=events, headers=headers)
            finish = None  # the response finishes the record once the stream ends
            return response
        except OpenAIError as exc:
            record.update(status=exc.status, error=exc.message)
            raise
        except UpstreamRejected as exc:
            record.update(status=exc.status, error=json.dumps(exc.body)[:500])
            return JSONResponse(exc.body, status_code=exc.status)
        except Exception as exc:  # a bug or a failing router: logged, answered 500 by the app
            record.update(status=500, error=f"{type(exc).__name__}: {exc}"[:500])
            raise
        finally:
            if finish is not None:
                await finish()

    async def _first_answer(self, order: list[str], forward: dict, stream: bool, record: dict):
        """Try the candidates in ``order`` until one answers (non-streaming: the whole JSON;
        streaming: its first event). A failure after that is the client's to see."""
        for name in order:
            breaker = self.breakers[name]
            breaker.before_call()
            upstream = self.upstreams[name]
            try:
                if stream:
                    events = upstream.stream(forward)
                    try:
                        first = await events.__anext__()
                    except StopAsyncIteration:
                        raise UpstreamError("empty stream")
                    except BaseException:
                        await events.aclose()
                        raise
                    result = (first, events)
                else:
                    result = await upstream.complete(forward)
            except UpstreamError as exc:
                breaker.record_failure()
                record["attempts"].append({"model": name, "error": exc.reason})
                self.metrics.upstream_errors.labels(name, exc.reason).inc()
                if name != order[-1]:
                    self.metrics.fallbacks.labels(name, exc.reason).inc()
                logger.warning("upstream %s failed (%s)", name, exc.reason)
                continue
            breaker.record_success()
            return name, result
        tried = ", ".join(f"{a['model']} ({a['error']})" for a in record["attempts"])
        raise OpenAIError(502, f"no upstream could answer: {tried}", type="upstream_error",
                          code="upstream_unavailable")

    async def _relay(self, name: str, first: dict, events, record: dict):
        """Server-sent events to the client, each naming the candidate as its model."""
        record["status"] = 200
        try:
            chunk = first
            while True:
                chunk["model"] = name
                yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
                try:
                    chunk = await events.__anext__()
                except StopAsyncIteration:
                    break
            yield "data: [DONE]\n\n"
        except UpstreamError as exc:  # too late to fall back: the client already has bytes
            record.update(status=502, error=f"{name} failed mid-stream: {exc.reason}")
            self.metrics.upstream_errors.labels(name, exc.reason).inc()
            error = {"message": record["error"], "type": "upstream_error", "param": None,
                     "code": "upstream_failed_mid_stream"}
            yield f"data: {json.dumps({'error': error})}\n\n"

    def _finish(self, record: dict, arrived: float) -> None:
        self.slots.release()
        self.metrics.in_flight.dec()
        seconds = time.perf_counter() - arrived
        model = record.get("chosen_model") or "none"
        status = record.setdefault("status", 499)  # 499: the client went away before an answer
        record["fallbacks"] = len(record["attempts"])
        record["latency_ms"] = seconds * 1000
        self.metrics.requests.labels(model, str(status)).inc()
        if model != "none":
            self.metrics.latency.labels(model).observe(seconds)
        if self.log is not None:
            self.log.record(**record)

    # ---- the other endpoints ---------------------------------------------------------------
    async def route(self, request: Request) -> dict:
        self.authorize(request)
        req = parse(RouteRequest, await read_json(request, self.config.max_body_bytes))
        if (req.prompt is None) == (req.messages is None):
            raise OpenAIError(400, "give either 'prompt' or 'messages'", code="invalid_request")
        try:
            prompt = req.prompt if req.prompt is not None else prompt_of(
                [m.model_dump() for m in req.messages])
        except ValueError as exc:
            raise OpenAIError(400, str(exc), code="invalid_request", param="messages")
        if len(prompt) > self.config.max_input_chars:
            raise OpenAIError(400, f"the prompt holds {len(prompt)} characters; this proxy accepts at "
                              f"most {self.config.max_input_chars}", code="context_length_exceeded")
        decision, seconds = await self.decide(prompt, req.cost_weight)
        return {"model": decision.model, "scores": decision.probabilities,
                "utilities": decision.utilities, "cost_weight": decision.cost_weight,
                "ranking": decision.ranking(), "router_ms": seconds * 1000}

    def models(self) -> dict:
        names = [ROUTED_MODEL, *self.upstreams]
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0,
                                            "owned_by": "lookahead-router"} for n in names]}

    def health(self) -> dict:
        return {"status": "ok", "router": self.router.name, "candidates": self.candidates,
                "circuits": {n: b.state for n, b in self.breakers.items()}}

    def render_metrics(self) -> bytes:
        for name, breaker in self.breakers.items():
            self.metrics.circuit_open.labels(name).set(0 if breaker.state == "closed" else 1)
        return self.metrics.render()


class _Once:
    """Run a clean-up exactly once, whichever path gets there first."""

    def __init__(self, fn):
        self.fn, self.done = fn, False

    async def __call__(self):
        if not self.done:
            self.done = True
            self.fn()


class _RelayResponse(StreamingResponse):
    """A stream that always releases its slot and upstream connection, even when the client
    disconnects before the first chunk is sent (the body generator may then never start)."""

    def __init__(self, content, on_close, events, headers):
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.on_close, self.events = on_close, events

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()
            await self.events.aclose()
            await self.on_close()


def create_app(router: Router, config: ServeConfig) -> FastAPI:
    proxy = Proxy(router, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await proxy.stop()

    app = FastAPI(title="Lookahead Router proxy", lifespan=lifespan)
    app.state.proxy = proxy

    @app.exception_handler(OpenAIError)
    async def _openai_error(request, exc: OpenAIError):
        if exc.status < 500:
            proxy.metrics.rejected.labels(exc.code or "invalid_request").inc()
        return exc.response()

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc: HTTPException):
        return error_response(exc.status_code, str(exc.detail), code="not_found"
                              if exc.status_code == 404 else None)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc):
        return error_response(400, str(exc), code="invalid_request")

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        logger.exception("unexpected error")
        return error_response(500, f"internal error: {type(exc).__name__}", type="server_error")

    app.post("/v1/chat/completions")(proxy.chat)
    app.post("/v1/route")(proxy.route)
    app.get("/v1/models")(proxy.models)
    app.get("/health")(proxy.health)

    @app.get("/metrics")
    async def metrics():
        return Response(proxy.render_metrics(), media_type=CONTENT_TYPE_LATEST)

    return app
