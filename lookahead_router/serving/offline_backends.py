"""Backends that answer without a network call, for demos and tests with no LLM server:

- replay (``replay: dataset.parquet``): the response the candidate gave to the same prompt in a
  routing dataset; a prompt the dataset never saw is a 404 ``replay_miss``.
- echo (``echo: true``): any prompt, answered with ``[echo from <candidate>] <the last user
  message's first 8 words> ...``. Its usage counts whitespace-separated words, not tokens.

Both speak the upstream calls of ``upstream.py``, honour ``n`` (n identical choices) and stream in
chunks. A stream always ends with a usage chunk (no choices), hidden from a client that did not
ask for it with ``stream_options.include_usage``, as an HTTP upstream's is.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import AsyncIterator

from lookahead_router.routers.cost import estimate_tokens
from lookahead_router.serving.config import UpstreamConfig
from lookahead_router.serving.protocol import content_text, prompt_of
from lookahead_router.serving.upstream import Event, UpstreamError, UpstreamRejected
from lookahead_router.serving.usage import client_wants_usage

ECHO_WORDS = 8  # of the prompt, in an echo answer: enough to recognise it, short in a demo


class _OfflineUpstream:
    """An answer made here: ``_answer`` gives its text, ``_usage_of`` counts a text's tokens."""
    name: str

    def _answer(self, body: dict) -> str:
        raise NotImplementedError

    def _usage_of(self, text: str) -> int:
        raise NotImplementedError

    def _usage(self, body: dict, answer: str, n: int) -> dict:
        prompt = 0
        for m in body.get("messages") or []:
            try:
                prompt += self._usage_of(content_text(m.get("content") or ""))
            except ValueError:
                pass
        completion = n * self._usage_of(answer)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

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


class ReplayUpstream(_OfflineUpstream):
    """Answers with the response the candidate gave to the same prompt in a routing dataset (the
    last user message must equal a dataset prompt)."""

    _datasets: dict[Path, tuple[dict[str, int], list[str], object]] = {}

    def __init__(self, name: str, config: UpstreamConfig):
        from lookahead_router.data.dataset import RoutingDataset
        self.name, self.config = name, config
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
        row = self.index.get(prompt_of(body.get("messages") or []))
        if row is None:  # the client asked something the recording never saw
            raise UpstreamRejected(404, {"error": {
                "message": f"{self.name} (replay backend): {self.config.replay} has no record of this "
                           "prompt; a replayed candidate answers only the dataset's prompts (echo: true "
                           "answers any)",
                "type": "invalid_request_error", "code": "replay_miss", "param": "messages"}})
        answer = self.responses[row, self.column]
        if answer is None:  # this candidate's response is missing: another candidate may have one
            raise UpstreamError("replay: no recorded response")
        return str(answer)

    def _usage_of(self, text: str) -> int:
        return estimate_tokens(text)


class EchoUpstream(_OfflineUpstream):
    """Answers any prompt: ``[echo from <name>] <the last user message's first words> ...``."""

    def __init__(self, name: str, config: UpstreamConfig):
        self.name, self.config = name, config

    def _answer(self, body: dict) -> str:
        try:
            words = prompt_of(body.get("messages") or []).split()
        except ValueError:  # a pass-through conversation without a user message
            words = []
        shown = " ".join(words[:ECHO_WORDS]) + (" ..." if len(words) > ECHO_WORDS else "")
        return f"[echo from {self.name}] {shown}".rstrip()

    def _usage_of(self, text: str) -> int:
        return len(text.split())


def offline_upstream(name: str, config: UpstreamConfig):
    return EchoUpstream(name, config) if config.echo else ReplayUpstream(name, config)
