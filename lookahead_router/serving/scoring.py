"""Router inference for the proxy: concurrent requests are scored together in micro-batches, in a
worker thread, so the event loop keeps serving streams while the router runs, and a burst of
requests costs a few forward passes instead of one each."""

from __future__ import annotations

import asyncio
from typing import Callable

import numpy as np

from lookahead_router.routers.base import Router


class ScoreBatcher:
    def __init__(self, router: Router, max_size: int = 32, max_wait_ms: float = 2.0,
                 on_batch: Callable[[int], None] | None = None):
        self.router, self.max_size, self.max_wait = router, max_size, max_wait_ms / 1000
        self.on_batch = on_batch  # told each batch's size (metrics)
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    async def score(self, prompt: str) -> np.ndarray:
        """[T] scores for one prompt."""
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((prompt, future))
        return await future

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
            batch = [(p, f) for p, f in batch if not f.cancelled()]  # clients that went away
            if not batch:
                continue
            try:
                scores = await asyncio.to_thread(self.router.score, [p for p, _ in batch])
            except Exception as exc:  # the router failed: every waiting request hears why
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            if self.on_batch:
                self.on_batch(len(batch))
            for (_, future), row in zip(batch, scores):
                if not future.done():
                    future.set_result(row)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
