"""One chat request's life in the proxy, accounted for whatever happens to it.

``Admission`` is an async context manager around a chat request. It owns the request's slot (the
concurrency limit) and the in-flight gauge, and it finishes the request's ``RequestRecord``
exactly once: one request-log row and one ``lookahead_requests_total`` count with the final status
and its cause (and the tokens and cost the upstream reported, ``usage.py``), for successes,
rejections (4xx), upstream failures (502), bugs (500) and clients that went away (499, as nginx
logs it). A streamed answer is handed to ``SSERelay``, which then
finishes the record when the stream ends. While the proxy waits for the router or an upstream,
and while it relays a stream, it also listens for the client's disconnect: then the upstream call
is cancelled and the slot freed at once, not when the upstream times out.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Mapping, Optional

import orjson
from fastapi.responses import Response, StreamingResponse

from lookahead_router.routers.cost import RouteDecision
from lookahead_router.serving.metrics import ProxyMetrics
from lookahead_router.serving.protocol import FastJSONResponse, OpenAIError
from lookahead_router.serving.request_log import RequestLog
from lookahead_router.serving.upstream import Event, UpstreamError, UpstreamRejected
from lookahead_router.serving.usage import usage_of

CLIENT_CLOSED = 499  # nginx's status for "the client closed the connection first"


class ClientLeft(Exception):
    """The client disconnected before its answer began."""


async def acquire_slot(slots: asyncio.Semaphore, concurrency: int, queue_timeout_s: float) -> None:
    """One of the ``concurrency`` slots, waited for at most ``queue_timeout_s``; then the 429 every
    endpoint that runs the router answers (chat completions through ``Admission``, /v1/route)."""
    try:
        async with asyncio.timeout(queue_timeout_s):
            await slots.acquire()
    except TimeoutError:
        raise OpenAIError(429, f"more than {concurrency} requests in flight; retry later",
                          type="rate_limit_error", code="concurrency_limit")


@dataclass
class RequestRecord:
    """A chat request's request-log row, filled in as the request goes (columns: request_log.py)."""
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    time: float = field(default_factory=time.time)
    requested_model: Optional[str] = None
    prompt: Optional[str] = None
    stream: bool = False
    scores: Optional[dict] = None
    cost_weight: Optional[float] = None
    router_ms: Optional[float] = None
    attempts: list = field(default_factory=list)    # failed upstream attempts: {"model", "error"}
    chosen_model: Optional[str] = None
    first_byte_ms: Optional[float] = None
    status: Optional[int] = None
    cause: Optional[str] = None
    error: Optional[str] = None
    latency_ms: Optional[float] = None
    prompt_tokens: Optional[int] = None      # the upstream's usage; None when it reported none
    completion_tokens: Optional[int] = None
    cost_usd: Optional[float] = None         # None also when the candidate has no price

    def routed(self, decision: RouteDecision, seconds: float) -> None:
        self.scores, self.cost_weight, self.router_ms = (decision.probabilities, decision.cost_weight,
                                                         seconds * 1000)

    def row(self) -> dict:
        row = {f.name: getattr(self, f.name) for f in fields(self)}  # (asdict deep-copies: slower)
        return {**row, "stream": int(self.stream), "fallbacks": len(self.attempts)}


class Admission:
    def __init__(self, slots: asyncio.Semaphore, concurrency: int, queue_timeout_s: float,
                 metrics: ProxyMetrics, log: Optional[RequestLog],
                 prices: Mapping[str, Optional[tuple[float, float]]] | None = None):
        self.slots, self.concurrency, self.queue_timeout_s = slots, concurrency, queue_timeout_s
        self.metrics, self.log = metrics, log
        self.prices = prices or {}  # candidate -> $ per million (input, output) tokens, or None
        self.record = RequestRecord()
        self.arrived = time.perf_counter()
        self.holds_slot = self.handed_over = self.finished = False

    async def __aenter__(self) -> "Admission":
        return self

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            if not self.handed_over:
                self.finish(self.record.status or 200, self.record.cause or "ok")
        elif isinstance(exc, ClientLeft):
            self.finish(CLIENT_CLOSED, "client_aborted_before_first_byte")
        elif isinstance(exc, asyncio.CancelledError):  # the server is shutting down
            self.finish(CLIENT_CLOSED, "cancelled")
        elif isinstance(exc, OpenAIError):
            self.finish(exc.status, exc.code or exc.type, exc.message)
        elif isinstance(exc, UpstreamRejected):
            self.record.chosen_model = self.record.chosen_model or exc.model  # (a replay miss: whose)
            self.finish(exc.status, "upstream_rejected", orjson.dumps(exc.body).decode()[:500])
        else:  # a bug or a failing router: logged, and answered 500 by the app
            self.finish(500, "internal_error", f"{type(exc).__name__}: {exc}"[:500])
        return False

    async def take_slot(self) -> None:
        await acquire_slot(self.slots, self.concurrency, self.queue_timeout_s)
        self.holds_slot = True
        self.metrics.in_flight.inc()

    def answered_by(self, name: str) -> None:
        seconds = time.perf_counter() - self.arrived
        self.record.chosen_model, self.record.first_byte_ms = name, seconds * 1000
        self.metrics.first_byte.labels(name).observe(seconds)

    def used(self, data: dict) -> None:
        """Note the tokens and cost in a completion or chunk, if it reports usage."""
        usage = usage_of(data)
        if usage is not None:
            record = self.record
            record.prompt_tokens, record.completion_tokens = usage.prompt_tokens, usage.completion_tokens
            record.cost_usd = usage.cost_usd(self.prices.get(record.chosen_model))

    def json(self, answer: dict, headers: dict) -> Response:
        self.used(answer)
        self.record.status, self.record.cause = 200, "ok"
        return FastJSONResponse(answer, headers=headers)

    def stream(self, name: str, first: Event, events, headers: dict) -> Response:
        """The streamed answer; from here on it is the stream that finishes the record."""
        self.handed_over = True
        return SSERelay(self, name, first, events, headers)

    def finish(self, status: int, cause: str, error: Optional[str] = None) -> None:
        """Free the slot and account for the request: the first call wins, later ones do nothing."""
        if self.finished:
            return
        self.finished = True
        if self.holds_slot:
            self.slots.release()
            self.metrics.in_flight.dec()
        seconds = time.perf_counter() - self.arrived
        record = self.record
        record.status, record.cause, record.latency_ms = status, cause, seconds * 1000
        record.error = error if error is not None else record.error
        model = record.chosen_model or "none"
        self.metrics.requests.labels(model, str(status), cause).inc()
        if record.chosen_model is not None:
            self.metrics.latency.labels(model).observe(seconds)
            self._count_usage(model, status)
        if self.log is not None:
            self.log.record(record.row())

    def _count_usage(self, model: str, status: int) -> None:
        record = self.record
        if record.prompt_tokens is not None:
            self.metrics.tokens.labels(model, "prompt").inc(record.prompt_tokens)
            self.metrics.tokens.labels(model, "completion").inc(record.completion_tokens)
            if record.cost_usd is not None:
                self.metrics.cost.labels(model).inc(record.cost_usd)
        elif status == 200:
            self.metrics.usage_missing.labels(model).inc()


async def unless_client_leaves(receive, work):
    """Await ``work``; if the client disconnects first, cancel it and raise ClientLeft."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_client_left(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # (also when this request itself is cancelled)
        watcher.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
    if task.cancelled():
        raise ClientLeft()
    return task.result()


async def _client_left(receive) -> None:
    """Returns once the client has disconnected (the request body was read already, so the
    server's next message is the disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class SSERelay(StreamingResponse):
    """The upstream's events, relayed as server-sent events: the JSON bytes as they came (already
    naming the candidate; a hidden usage chunk is read, not sent), then ``[DONE]``. A failure
    mid-stream ends it with an error event and no ``[DONE]``, so clients see an error, not a
    complete answer. The upstream call is closed and the record finished however the stream ends,
    including when the client leaves."""

    def __init__(self, admission: Admission, name: str, first: Event, events, headers: dict):
        super().__init__(iter(()), media_type="text/event-stream", headers=headers)
        self.admission, self.name, self.first, self.events = admission, name, first, events

    async def __call__(self, scope, receive, send) -> None:
        admission = self.admission
        try:
            status, cause, error = await unless_client_leaves(receive, self._relay(send))
            admission.finish(status, cause, error)
        except ClientLeft:
            admission.finish(CLIENT_CLOSED, "client_aborted_after_first_byte")
        except OSError:  # the connection broke while sending
            admission.finish(CLIENT_CLOSED, "client_aborted_after_first_byte")
        except Exception as exc:  # a bug: the client sees its stream cut off
            admission.finish(500, "internal_error", f"{type(exc).__name__}: {exc}"[:500])
            raise
        finally:
            await self.events.aclose()
            admission.finish(CLIENT_CLOSED, "cancelled")  # (only if nothing above finished it)

    async def _relay(self, send) -> tuple[int, str, Optional[str]]:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        event = self.first
        while True:
            if "usage" in event.data:
                self.admission.used(event.data)
            if not event.hidden:
                data = event.raw if event.raw is not None else orjson.dumps({**event.data, "model": self.name})
                await send({"type": "http.response.body", "body": b"data: " + data + b"\n\n", "more_body": True})
            try:
                event = await self.events.__anext__()
            except StopAsyncIteration:
                break
            except UpstreamError as exc:  # too late to fall back: the client already has bytes
                message = f"{self.name} failed mid-stream: {exc.reason}"
                self.admission.metrics.upstream_errors.labels(self.name, exc.reason).inc()
                error = {"message": message, "type": "upstream_error", "param": None,
                         "code": "upstream_failed_mid_stream"}
                await send({"type": "http.response.body", "body": b"data: " + orjson.dumps({"error": error})
                            + b"\n\n", "more_body": False})
                return 502, "upstream_failed_mid_stream", message
        # Logged before the last byte goes out: a client that saw [DONE] has its row in the spool,
        # even if this process is killed the next instant.
        self.admission.finish(200, "ok")
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
        return 200, "ok", None
