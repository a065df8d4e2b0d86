"""The offline answers (``offline_answers.py``: replay and echo, no network call) as upstreams
of the proxy: they speak the upstream calls of ``upstream.py``, honour ``n`` (n identical choices)
and stream in chunks. A stream always ends with a usage chunk (no choices), hidden from a client
that did not ask for it with ``stream_options.include_usage``, as an HTTP upstream's is. A prompt
a replayed dataset never saw is a 404 ``replay_miss``.
"""

from __future__ import annotations

import time
import uuid
from typing import AsyncIterator

from lookahead_router.catalogue import ConfigError, UpstreamConfig
from lookahead_router.offline_answers import NoRecordedResponse, ReplayMiss, offline_answers
from lookahead_router.serving.upstream import Event, HTTPUpstream, UpstreamError, UpstreamRejected, UpstreamSession
from lookahead_router.serving.usage import client_wants_usage


class OfflineUpstream:
    """An upstream whose answers are made here (``offline_answers.py``)."""

    def __init__(self, name: str, config: UpstreamConfig):
        self.name, self.config = name, config
        self.answers = offline_answers(name, config)

    def _answer(self, body: dict) -> str:
        try:
            return self.answers.answer(body.get("messages") or [])
        except ReplayMiss as exc:
            raise UpstreamRejected(404, {"error": {"message": str(exc), "type": "invalid_request_error",
                                                   "code": "replay_miss", "param": "messages"}}) from None
        except NoRecordedResponse as exc:  # another candidate may have one: the fallback tries it
            raise UpstreamError(str(exc)) from None

    def _usage(self, body: dict, answer: str, n: int) -> dict:
        return self.answers.usage(body.get("messages") or [], answer, n)

    async def complete(self, body: dict) -> dict:
        answer, n = self._answer(body), body.get("n") or 1
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
                "created": int(time.time()), "model": self.name,
                "choices": [{"index": i, "message": {"role": "assistant", "content": answer},
                             "finish_reason": "stop"} for i in range(n)],
                "usage": self._usage(body, answer, n)}

    async def stream(self, body: dict) -> AsyncIterator[Event]:
        answer, n = self._answer(body), body.get("n") or 1
        shown = client_wants_usage(body)
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": self.name}
        if shown:
            base["usage"] = None  # as OpenAI does: every chunk has the key, the last one a value

        def chunk(i: int, delta: dict, finish=None) -> Event:
            return Event({**base, "choices": [{"index": i, "delta": delta, "finish_reason": finish}]})

        for i in range(n):
            yield chunk(i, {"role": "assistant", "content": ""})
        for start in range(0, len(answer), 64):
            for i in range(n):
                yield chunk(i, {"content": answer[start:start + 64]})
        for i in range(n):
            yield chunk(i, {}, "stop")
        yield Event({**base, "choices": [], "usage": self._usage(body, answer, n)}, hidden=not shown)


def make_upstream(name: str, config: UpstreamConfig, session: UpstreamSession):
    """The upstream a model of the config names: a server at base_url, or answers without one."""
    if config.local is not None:
        raise ConfigError(f"models.{name}: local models only generate (lookahead collect generate); "
                         "serve them behind an OpenAI-compatible server (e.g. vLLM) and give base_url")
    if config.base_url is not None:
        return HTTPUpstream(name, config, session)
    return OfflineUpstream(name, config)
