"""The OpenAI-compatible routing proxy (FastAPI).

    POST /v1/chat/completions   model "lookahead": the router picks the candidate; a candidate's
                                name goes straight to it. Streaming (SSE) and non-streaming.
    POST /v1/route              the router's scores and decision, without generating (under the
                                same concurrency limit as chat completions)
    GET  /v1/models, /v1/models/{id}, /health, /metrics (Prometheus)

A routed request tries the candidates from the best utility down (``fallback.py``) and falls back
when an upstream fails before its first byte. The answer's ``model`` field and the
``x-lookahead-model`` header name the candidate that answered. Every chat request is accounted
for, whatever becomes of it (``admission.py``), with the tokens and cost its upstream reported
(``usage.py``); each HTTP request gets an access log line (``access_log.py``). With client keys
configured, every endpoint but ``/health`` needs one.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from lookahead_router.catalogue import ConfigError, ServeConfig
from lookahead_router.routers.base import Router
from lookahead_router.routers.cost import RouteDecision
from lookahead_router.serving.access_log import RECORD_KEY, AccessLog
from lookahead_router.serving.admission import (CLIENT_CLOSED, Admission, ClientLeft, acquire_slot,
                                                unless_client_leaves)
from lookahead_router.serving.fallback import FallbackChain
from lookahead_router.serving.metrics import ProxyMetrics
from lookahead_router.serving.protocol import (ROUTED_MODEL, ChatRequest, FastJSONResponse, OpenAIError,
                                               RouteRequest, chat_prompt, error_response, forwarded_body,
                                               parse, read_json, route_prompt)
from lookahead_router.serving.request_log import RequestLog
from lookahead_router.serving.scoring import QueueFull, RouteBatcher
from lookahead_router.serving.offline_backends import make_upstream
from lookahead_router.serving.upstream import UpstreamRejected, UpstreamSession

logger = logging.getLogger("lookahead_router.serving")


class Proxy:
    """Everything one running proxy holds: the router, the upstreams behind their fallback chain,
    the shared HTTP session, the concurrency limit, metrics and the request log."""

    def __init__(self, router: Router, config: ServeConfig):
        check_candidates(router, config)
        self.router, self.config = router, config
        self.keys = [k.encode() for k in config.client_keys()]
        self.metrics = ProxyMetrics()
        self.slots = asyncio.Semaphore(config.concurrency)
        self.session = UpstreamSession(pool=config.concurrency + 16)
        upstreams = {name: make_upstream(name, up, self.session) for name, up in config.models.items()}
        self.fallback = FallbackChain(upstreams, config.circuit_breaker, config.max_attempts, self.metrics)
        self.model_names = [ROUTED_MODEL, *upstreams]
        self.usd_prices = {name: up.usd_per_million_tokens() for name, up in config.models.items()}
        self.log = (RequestLog(config.request_log, config.log_prompts, config.request_log_spool,
                               int(config.request_log_buffer_mb * (1 << 20)), self.metrics)
                    if config.request_log else None)
        self.batcher = RouteBatcher(router, config.prices(), config.batch.max_size, config.batch.max_wait_ms,
                                    on_batch=self.metrics.router_batch.observe,
                                    max_queue=config.batch.max_queue)

    async def stop(self) -> None:
        await self.batcher.close()
        await self.session.close()
        if self.log is not None:
            self.log.close()

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

    def admit(self) -> Admission:
        return Admission(self.slots, self.config.concurrency, self.config.queue_timeout_s,
                         self.metrics, self.log, self.usd_prices)

    def check_model(self, name: str) -> None:
        if name not in self.model_names:
            raise OpenAIError(404, f"The model '{name}' does not exist; this proxy serves "
                              f"{self.model_names}", code="model_not_found", param="model")

    @asynccontextmanager
    async def slot(self):
        """One of the concurrency slots for a request that has no ``Admission`` (/v1/route): the
        router's work is bounded however it is asked for, with the same 429 when none frees."""
        await acquire_slot(self.slots, self.config.concurrency, self.config.queue_timeout_s)
        self.metrics.in_flight.inc()
        try:
            yield
        finally:
            self.slots.release()
            self.metrics.in_flight.dec()

    async def decide(self, prompt: str, cost_weight: float | None) -> tuple[RouteDecision, float]:
        start = time.perf_counter()
        try:
            decision = await self.batcher.route(prompt, self.config.cost_weight if cost_weight is None
                                                else cost_weight)
        except QueueFull as exc:
            raise OpenAIError(503, f"{exc}; retry later", type="server_error", code="router_queue_full")
        seconds = time.perf_counter() - start
        self.metrics.router_latency.observe(seconds)
        return decision, seconds

    # ---- chat completions ------------------------------------------------------------------
    async def chat(self, request: Request) -> Response:
        async with self.admit() as admitted:
            record = admitted.record
            request.scope[RECORD_KEY] = record  # for the access log line
            self.authorize(request)
            body = await read_json(request, self.config.max_body_bytes)
            chat = parse(ChatRequest, body)
            record.requested_model, record.stream = chat.model, bool(chat.stream)
            self.check_model(chat.model)
            record.prompt = chat_prompt(chat, body, self.config.max_input_chars)
            name, answer = await unless_client_leaves(request.receive, self._answer(chat, body, admitted))
            headers = {"x-lookahead-model": name, "x-lookahead-attempts": str(len(record.attempts) + 1),
                       "x-request-id": record.request_id}
            if chat.stream:
                return admitted.stream(name, *answer, headers)
            answer["model"] = name
            return admitted.json(answer, headers)

    async def _answer(self, chat: ChatRequest, body: dict, admitted: Admission):
        """Wait for a slot, route, and get the first answer (or first event) of the candidates."""
        await admitted.take_slot()
        order = [chat.model]
        if chat.model == ROUTED_MODEL:
            decision, seconds = await self.decide(admitted.record.prompt, chat.cost_weight)
            admitted.record.routed(decision, seconds)
            order = self.fallback.order(decision.ranking())
        name, answer = await self.fallback.first_answer(order, forwarded_body(chat, body), bool(chat.stream),
                                                        admitted.record.attempts)
        admitted.answered_by(name)
        return name, answer

    # ---- the other endpoints ---------------------------------------------------------------
    async def route(self, request: Request) -> dict:
        req = parse(RouteRequest, await read_json(request, self.config.max_body_bytes))
        prompt = route_prompt(req, self.config.max_input_chars)
        async with self.slot():
            decision, seconds = await self.decide(prompt, req.cost_weight)
        return {"model": decision.model, "scores": decision.probabilities,
                "utilities": decision.utilities, "cost_weight": decision.cost_weight,
                "ranking": decision.ranking(), "router_ms": seconds * 1000}

    def models(self) -> dict:
        return {"object": "list", "data": [_model_card(n) for n in self.model_names]}

    def model(self, model_id: str) -> dict:
        self.check_model(model_id)
        return _model_card(model_id)

    def health(self) -> dict:
        return {"status": "ok", "router": self.router.name, "candidates": list(self.router.candidates),
                "circuits": self.fallback.states()}

    def render_metrics(self) -> Response:
        for name, state in self.fallback.states().items():
            self.metrics.circuit_open.labels(name).set(0 if state == "closed" else 1)
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def check_candidates(router: Router, config: ServeConfig) -> None:
    missing = [c for c in router.candidates if c not in config.models]
    if missing:
        raise ConfigError(f"models: the router's candidate(s) {missing} have no upstream "
                          f"(the config names {list(config.models)})")


def _model_card(name: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "lookahead-router"}


def create_app(router: Router, config: ServeConfig) -> FastAPI:
    proxy = Proxy(router, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await proxy.stop()

    app = FastAPI(title="Lookahead Router proxy", lifespan=lifespan, default_response_class=FastJSONResponse)
    app.state.proxy = proxy
    if config.cors_origins:  # preflights are answered here, before any key check
        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["*"], expose_headers=["x-lookahead-model", "x-lookahead-attempts", "x-request-id"])
    if config.access_log:  # outermost: it times and sees every response, preflights included
        app.add_middleware(AccessLog)

    @app.exception_handler(OpenAIError)
    async def _openai_error(request, exc: OpenAIError):
        return exc.response()

    @app.exception_handler(UpstreamRejected)
    async def _upstream_rejected(request, exc: UpstreamRejected):
        return FastJSONResponse(exc.body, status_code=exc.status)

    @app.exception_handler(ClientLeft)
    async def _client_left(request, exc: ClientLeft):
        return Response(status_code=CLIENT_CLOSED)  # nobody is listening any more

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc: HTTPException):
        return error_response(exc.status_code, str(exc.detail), code="not_found"
                              if exc.status_code == 404 else None)

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        logger.exception("unexpected error")
        return error_response(500, f"internal error: {type(exc).__name__}", type="server_error")

    keyed = [Depends(proxy.authorize)]
    app.post("/v1/chat/completions")(proxy.chat)  # checks its key itself, so the refusal is logged
    app.post("/v1/route", dependencies=keyed)(proxy.route)
    app.get("/v1/models", dependencies=keyed)(proxy.models)
    app.get("/v1/models/{model_id:path}", dependencies=keyed)(proxy.model)
    app.get("/metrics", dependencies=keyed)(proxy.render_metrics)
    app.get("/health")(proxy.health)
    return app
