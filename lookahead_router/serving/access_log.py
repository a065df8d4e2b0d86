"""The proxy's access log: one line per HTTP request, on the ``lookahead.access`` logger (INFO), in
place of uvicorn's (which `lookahead serve` turns off, so nothing is printed twice).

    127.0.0.1 "POST /v1/chat/completions" 200 412ms model=Qwen2.5-Coder-7B-Instruct routed=1 attempts=1 tokens=57+120 cost=$0.000032 id=5f0c...
    127.0.0.1 "GET /health" 200 1ms

client address, method and path (never the query string or the body: no prompt), status, time to
the last byte, then for chat completions: the candidate that answered (``-``: none), whether it was
routed (model "lookahead"), upstreams tried, prompt+completion tokens and the cost in USD as the
upstream reported them (``-``: unknown) and the request id (``x-request-id``, the request log's
row). A chat request's status is its final one (``admission.py``): 499 when the client left, 502
for a stream cut short mid-way, though its response had begun with 200.

Writing the line can never fail the request: it is written after the response, and any error in
doing so is swallowed (and reported once).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Optional

from lookahead_router.serving.protocol import ROUTED_MODEL

ACCESS_LOGGER = "lookahead.access"
RECORD_KEY = "lookahead.record"  # the ASGI scope key under which a chat request leaves its RequestRecord

logger = logging.getLogger(ACCESS_LOGGER)
_UNPRINTABLE = re.compile(r'[\x00-\x1f\x7f"\\]')  # a path cannot break the line or its quotes


class AccessLog:
    """ASGI middleware writing the access log line of every HTTP request."""

    def __init__(self, app):
        self.app = app
        self.failed = False

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not logger.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: list[Optional[int]] = [None]

        async def send_noting_status(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        except Exception:
            status[0] = status[0] or 500  # what the server's error handler answers
            raise
        finally:
            self._write(scope, status[0], time.perf_counter() - started)

    def _write(self, scope, status: Optional[int], seconds: float) -> None:
        try:
            logger.info(access_line(scope, status, seconds))
        except Exception:  # noqa: BLE001  (the access log must never fail a request)
            if not self.failed:
                self.failed = True
                logging.getLogger("lookahead_router.serving").exception("access log: a line could not be written")


def access_line(scope, status: Optional[int], seconds: float) -> str:
    client = scope.get("client")
    path = _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", scope.get("path", ""))
    record = scope.get(RECORD_KEY)
    if record is not None and record.status is not None:
        status = record.status
    line = f'{client[0] if client else "-"} "{scope.get("method", "-")} {path}" {status or "-"} {seconds * 1000:.0f}ms'
    if record is None:
        return line
    tried = len(record.attempts) + (record.chosen_model is not None)
    tokens = (f"{record.prompt_tokens}+{record.completion_tokens}" if record.prompt_tokens is not None
              else "-")
    cost = f"${record.cost_usd:.6f}" if record.cost_usd is not None else "-"
    return (f"{line} model={record.chosen_model or '-'} routed={int(record.requested_model == ROUTED_MODEL)} "
            f"attempts={tried} tokens={tokens} cost={cost} id={record.request_id}")
