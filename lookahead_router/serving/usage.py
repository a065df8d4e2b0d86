"""Token counts and cost per request, as the upstream reports them.

Counts come from the upstream's ``usage`` only (``prompt_tokens``, ``completion_tokens``): a
non-streamed answer's ``usage``, or a stream's final usage chunk. A streaming upstream is asked for
that chunk (``stream_options.include_usage``) when the client did not ask; the chunk is then held
back and the other chunks lose their ``"usage": null``, so the client sees what OpenAI would have
sent it (``upstream.py``, ``offline_backends.py``). An upstream that reports no usage leaves the
counts unknown (NULL in the request log, counted in ``lookahead_usage_missing_total``): they are
never estimated.

Cost in USD = prompt_tokens × price_input / 1e6 + completion_tokens × price_output / 1e6, with the
candidate's prices from the config ($ per million tokens); unknown when the config sets no price.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    def cost_usd(self, usd_per_million: Optional[tuple[float, float]]) -> Optional[float]:
        if usd_per_million is None:
            return None
        price_input, price_output = usd_per_million
        return (self.prompt_tokens * price_input + self.completion_tokens * price_output) / 1e6


def usage_of(data: dict) -> Optional[Usage]:
    """The ``usage`` of a completion or chunk; None unless it has both counts as whole numbers."""
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not (_count(prompt) and _count(completion)):
        return None
    return Usage(prompt, completion)


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def client_wants_usage(body: dict) -> bool:
    return bool(_stream_options(body).get("include_usage"))


def asking_for_usage(body: dict) -> dict:
    """``body`` with ``stream_options.include_usage`` on (the client's other stream options kept)."""
    return {**body, "stream_options": {**_stream_options(body), "include_usage": True}}


def _stream_options(body: dict) -> dict:
    options = body.get("stream_options")
    return options if isinstance(options, dict) else {}
