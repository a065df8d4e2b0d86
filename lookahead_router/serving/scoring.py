"""Router inference for the proxy: concurrent requests are routed together in micro-batches, in a
worker thread, so the event loop keeps serving streams while the router runs, and a burst of
requests costs a few forward passes instead of one each.

Each batch goes through ``Router.route`` (one call per distinct cost weight in the batch), so the
proxy decides exactly as the Python API and `lookahead route` do. One bad prompt never fails its
neighbours: when a batch raises, its prompts are routed again one by one, and only the one that
fails hears the error.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Mapping

from lookahead_router.routers.base import Router
from lookahead_router.routers.cost import Price, RouteDecision, expected_costs


class QueueFull(Exception):
    """The router's queue holds ``max_queue`` prompts already: this one is refused, not queued."""


class RouteBatcher:
    def __init__(self, router: Router, prices: Mapping[str, Price], max_size: int = 32,
                 max_wait_ms: float = 2.0, on_batch: Callable[[int], None] | None = None,
                 max_queue: int = 1024):
        self.router, self.prices = router, prices
        self.max_size, self.max_wait = max_size, max_wait_ms / 1000
        # Bounded: a router slower than the arrivals must refuse prompts, not hold ever more of
        # them (and their clients) in memory while each waits longer than the last.
        self.max_queue = max_queue
        self.on_batch = on_batch  # told each batch's size (metrics)
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    async def route(self, prompt: str, cost_weight: float) -> RouteDecision:
        if self._worker is None:
            self._queue = asyncio.Queue(maxsize=self.max_queue)
            self._worker = asyncio.create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((prompt, cost_weight, future))
        except asyncio.QueueFull:
            raise QueueFull(f"the router's queue is full ({self.max_queue} prompts waiting)") from None
        return await future

    def _route(self, prompts: list[str], cost_weight: float) -> list[RouteDecision]:
        costs = expected_costs(self.prices, self.router.candidates, prompts) if cost_weight > 0 else None
        return self.router.route(prompts, cost_weight=cost_weight, costs=costs)

    def _route_one(self, prompt: str, cost_weight: float):
        try:
            return self._route([prompt], cost_weight)[0]
        except Exception as exc:  # noqa: BLE001
            return exc

    def _route_batch(self, batch: list[tuple]) -> list:
        """A decision or the exception it raised, per request of ``batch`` (run in a thread)."""
        out: list = [None] * len(batch)
        by_weight: dict[float, list[int]] = {}
        for i, (_, weight, _) in enumerate(batch):
            by_weight.setdefault(weight, []).append(i)
        for weight, rows in by_weight.items():
            try:
                decisions = self._route([batch[i][0] for i in rows], weight)
            except Exception as exc:  # noqa: BLE001  (handed to the request that caused it)
                if len(rows) == 1:
                    decisions = [exc]
                else:  # isolate the prompt that fails: each is routed alone
                    decisions = [self._route_one(batch[i][0], weight) for i in rows]
            for i, decision in zip(rows, decisions):
                out[i] = decision
        return out

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_size:
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:
                    break
            batch = [item for item in batch if not item[2].cancelled()]  # clients that went away
            if not batch:
                continue
            try:
                results = await asyncio.to_thread(self._route_batch, batch)
            except Exception as exc:  # noqa: BLE001  (the worker must outlive any failure)
                results = [exc] * len(batch)
            if self.on_batch:
                self.on_batch(len(batch))
            for (_, _, future), result in zip(batch, results):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
