"""The backends a candidate's requests go to: an OpenAI-compatible server over HTTP, or one that
answers without a network call (``offline_backends.py``: recorded responses, or an echo;
``offline_backends.make_upstream`` picks one of the two for each model of the config).

Every backend speaks the same two calls:
    await backend.complete(body)   -> the chat.completion JSON (a dict)
    backend.stream(body)           -> async iterator of Events (chat.completion.chunk)
Failures that are not the request's fault raise UpstreamError and the proxy falls back: connection
refused, timeouts, 5xx, 429, and the upstream's own 401/403/404 (a wrong upstream key, model id or
URL is the deployment's fault, and another candidate may well answer). Any other 4xx is caused by
the request itself (a bad parameter): UpstreamRejected, which the proxy relays unchanged. A stream
that ends without a finish (no ``finish_reason`` and no ``[DONE]``) was cut short: UpstreamError.
A stream's final usage chunk is asked for even when the client did not ask (``usage.py``); it is
then yielded as a hidden Event, which the proxy reads and does not relay.
"""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Optional

import aiohttp
import orjson

from lookahead_router.catalogue import UpstreamConfig
from lookahead_router.data.jsonl import MAX_NESTING, deep_field
from lookahead_router.serving.usage import asking_for_usage, client_wants_usage

# The upstream's own auth, permission and routing errors: the deployment's fault, not the client's.
DEPLOYMENT_ERRORS = (401, 403, 404)


class UpstreamError(Exception):
    """The upstream failed in a way worth retrying elsewhere."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class UpstreamRejected(Exception):
    """The upstream refused the request itself (4xx): the client gets the same answer. ``model``:
    the candidate that refused (set by the fallback chain, for the metrics and the log)."""

    def __init__(self, status: int, body: dict):
        super().__init__(f"upstream answered {status}")
        self.status, self.body = status, body
        self.model: Optional[str] = None


@dataclass
class Event:
    """One chat.completion.chunk: parsed, and (from an HTTP upstream) the JSON bytes to relay
    as they are, already naming the candidate as the model. ``hidden``: a usage chunk the client
    did not ask for, read by the proxy and not relayed."""
    data: dict
    raw: Optional[bytes] = None
    hidden: bool = False

    def finished(self) -> bool:
        return any(c.get("finish_reason") for c in self.data.get("choices") or () if isinstance(c, dict))


class UpstreamSession:
    """The pooled HTTP client every HTTP upstream shares. aiohttp rather than httpx: in a
    profile of the proxy under bench/proxy_load.py's load, httpx's pure-Python HTTP parsing (h11)
    was the largest share of the proxy's CPU; aiohttp parses in C. Opened on first use, inside
    the server's event loop. Idle connections
    are dropped after 4 s, before servers' usual 5 s keep-alive ends, so the proxy never sends on
    a connection the upstream is closing."""

    def __init__(self, pool: int):
        self.pool = pool
        self._session: Optional[aiohttp.ClientSession] = None

    def get(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                limit=self.pool, keepalive_timeout=4.0))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HTTPUpstream:
    """An OpenAI-compatible server (vLLM, TGI, llama.cpp, a hosted API). The timeout bounds the
    wait for a connection and for each read, so a hung upstream is abandoned after ``timeout_s``
    of silence."""

    def __init__(self, name: str, config: UpstreamConfig, session: UpstreamSession):
        self.name, self.config, self.session = name, config, session
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self.timeout = aiohttp.ClientTimeout(total=None, connect=config.timeout_s, sock_read=config.timeout_s)
        self.model = config.model or name
        # Chunks name the upstream's model id; the proxy names the candidate. Both ways servers
        # write the field, so it can be swapped in the raw bytes without re-serialising the chunk.
        quoted, ours = orjson.dumps(self.model), orjson.dumps(name)
        self._model_fields = [(b'"model":' + quoted, b'"model":' + ours),
                              (b'"model": ' + quoted, b'"model": ' + ours)]

    async def _post(self, body: dict, stream: bool) -> aiohttp.ClientResponse:
        headers = {"content-type": "application/json"}
        key = self.config.api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        payload = orjson.dumps({**body, "model": self.model, "stream": stream})
        with _transport_errors():
            return await self.session.get().post(self.url, data=payload, headers=headers, timeout=self.timeout)

    async def complete(self, body: dict) -> dict:
        response = await self._post(body, stream=False)
        try:
            with _transport_errors():
                content = await response.read()
        finally:
            response.release()
        _raise_for_status(response.status, content)
        return _json_object(content, "completion")

    async def stream(self, body: dict) -> AsyncIterator[Event]:
        hide_usage = self.config.stream_usage and not client_wants_usage(body)
        response = await self._post(asking_for_usage(body) if hide_usage else body, stream=True)
        try:
            with _transport_errors():
                if response.status >= 400:
                    _raise_for_status(response.status, await response.read())
                finished = done = False
                async for line in _lines(response):
                    if done or not line.startswith(b"data:"):
                        continue  # SSE comments, event names, blank separators; the body's end
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        # Read on to the body's end (it follows at once), so the connection goes
                        # back to the pool instead of being closed and opened anew.
                        done = True
                        continue
                    event = self._event(data)
                    if hide_usage and "usage" in event.data:
                        event = self._without_usage(event)
                    finished = finished or event.finished()
                    yield event
                if not (finished or done):
                    raise UpstreamError("stream ended without a finish")
        finally:
            response.release()

    def _event(self, raw: bytes) -> Event:
        data = _json_object(raw, "stream event")
        if "error" in data:  # some servers report a failure mid-stream as an event
            raise UpstreamError(f"error event: {str(data['error'])[:200]}")
        if data.get("model") == self.name:
            return Event(data, raw)
        for theirs, ours in self._model_fields:
            if theirs in raw:
                return Event(data, raw.replace(theirs, ours, 1))
        return Event(data)  # an unexpected model field: re-serialised with the candidate's name

    def _without_usage(self, event: Event) -> Event:
        """What the client sees of a chunk carrying usage it did not ask for: nothing of the
        usage chunk itself, and the other chunks without their ``"usage": null``. (``data`` keeps
        the usage, for the proxy to read.)"""
        if not event.data.get("choices") and isinstance(event.data["usage"], dict):
            return Event(event.data, event.raw, hidden=True)
        if event.raw is not None:
            for field in (b',"usage":null', b', "usage": null'):
                if field in event.raw:
                    return Event(event.data, event.raw.replace(field, b"", 1))
        shown = {k: v for k, v in event.data.items() if k != "usage"}
        return Event(event.data, orjson.dumps({**shown, "model": self.name}))


def _json_object(raw: bytes, what: str) -> dict:
    """``raw`` as a JSON object; anything else is the upstream's failure, worth a fallback."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(f"invalid JSON {what} from upstream") from exc
    if not isinstance(data, dict):
        raise UpstreamError(f"a {what} that is not a JSON object")
    if deep_field(data) is not None:   # it could not be re-serialised for the client
        raise UpstreamError(f"a {what} nested more than {MAX_NESTING} levels deep")
    return data


async def _lines(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The body's lines as bytes, whatever their length (SSE's line ends: \\n, \\r\\n or \\r)."""
    pending = b""
    async for chunk in response.content.iter_any():
        lines = (pending + chunk).replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        pending = lines.pop()
        for line in lines:
            yield line
    if pending:
        yield pending


@contextmanager
def _transport_errors():
    """Timeouts and connection failures, as the UpstreamError the proxy falls back on."""
    try:
        yield
    except asyncio.TimeoutError as exc:  # (aiohttp's read and connect timeouts included)
        raise UpstreamError("timeout") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"connection: {type(exc).__name__}") from exc


def _raise_for_status(status: int, content: bytes) -> None:
    if status < 400:
        return
    if status >= 500 or status == 429 or status in DEPLOYMENT_ERRORS:
        raise UpstreamError(f"HTTP {status}")
    try:
        body = orjson.loads(content)
        if not isinstance(body, dict) or deep_field(body) is not None:
            raise ValueError
    except ValueError:
        body = {"error": {"message": content.decode("utf-8", "replace")[:500],
                          "type": "upstream_error", "code": None, "param": None}}
    raise UpstreamRejected(status, body)
