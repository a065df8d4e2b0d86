"""Which upstream answers: candidates tried in order until one gives its first byte, each behind a
circuit breaker."""

from __future__ import annotations

import logging
import time

from lookahead_router.catalogue import CircuitBreakerConfig
from lookahead_router.serving.metrics import ProxyMetrics
from lookahead_router.serving.protocol import OpenAIError
from lookahead_router.serving.upstream import UpstreamError, UpstreamRejected

logger = logging.getLogger("lookahead_router.serving")


class CircuitBreaker:
    """Closed → open after ``failures`` consecutive failures; open → half-open after ``cooldown_s``
    (one trial call); the trial's success closes it, its failure opens it again. While open, the
    proxy tries the candidate only after every healthy one. Every call settles: an upstream that
    refuses a bad request is up (success); a call abandoned because the client left says nothing
    about the upstream, so the trial slot is given back and the next call is the trial."""

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

    def record_abandoned(self) -> None:
        self.trial_running = False


class FallbackChain:
    """The candidates' upstreams and breakers. ``order`` puts a routed request's ranking in the
    order to try (healthy first, at most ``max_attempts``); ``first_answer`` tries them until one
    answers (non-streaming: the whole JSON; streaming: its first event). A failure after that is
    the client's to see: the stream has begun."""

    def __init__(self, upstreams: dict, breaker: CircuitBreakerConfig, max_attempts: int,
                 metrics: ProxyMetrics):
        self.upstreams, self.max_attempts, self.metrics = upstreams, max_attempts, metrics
        self.breakers = {name: CircuitBreaker(breaker) for name in upstreams}

    def order(self, ranking: list[str]) -> list[str]:
        healthy = [c for c in ranking if self.breakers[c].healthy()]
        return (healthy + [c for c in ranking if c not in healthy])[: self.max_attempts]

    async def first_answer(self, order: list[str], body: dict, stream: bool, attempts: list[dict]):
        """(candidate, answer); answer is the JSON dict, or (first event, event iterator) when
        streaming. Failed attempts are appended to ``attempts``; 502 when none answers."""
        for name in order:
            breaker = self.breakers[name]
            breaker.before_call()
            try:
                answer = await self._call(self.upstreams[name], body, stream)
            except UpstreamError as exc:
                breaker.record_failure()
                attempts.append({"model": name, "error": exc.reason})
                self.metrics.upstream_errors.labels(name, exc.reason).inc()
                if name != order[-1]:
                    self.metrics.fallbacks.labels(name, exc.reason).inc()
                logger.warning("upstream %s failed (%s)", name, exc.reason)
                continue
            except UpstreamRejected as exc:
                breaker.record_success()  # it answered: the request was at fault, not the upstream
                exc.model = name
                raise
            except BaseException:  # cancelled (the client left) or a bug: no verdict on the upstream
                breaker.record_abandoned()
                raise
            breaker.record_success()
            return name, answer
        tried = ", ".join(f"{a['model']} ({a['error']})" for a in attempts)
        raise OpenAIError(502, f"no upstream could answer: {tried}", type="upstream_error",
                          code="upstream_unavailable")

    @staticmethod
    async def _call(upstream, body: dict, stream: bool):
        if not stream:
            return await upstream.complete(body)
        events = upstream.stream(body)
        try:
            first = await events.__anext__()
        except StopAsyncIteration:
            await events.aclose()
            raise UpstreamError("empty stream")
        except BaseException:
            await events.aclose()
            raise
        return first, events

    def states(self) -> dict[str, str]:
        return {name: breaker.state for name, breaker in self.breakers.items()}
