"""Coalescing concurrent single-row statements into one statement per round trip.

Under load many deliveries claim and record at the same moment; each statement is a round trip,
a transaction and a WAL flush. `Coalescer` runs the first request at once and gathers the
requests that arrive meanwhile into the next call (at most `max_inflight` calls at a time), so a
request waits at most for the call in flight before its own: no timer, no added latency when idle.
A batch that fails is retried item by item, so one bad row never fails its neighbours and each
caller sees exactly the error its own single statement would have raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from gateway.logging import get_logger

log = get_logger(__name__)

K = TypeVar("K")
R = TypeVar("R")


class Coalescer(Generic[K, R]):
    def __init__(
        self,
        run_batch: Callable[[list[K]], Awaitable[Sequence[R]]],
        run_one: Callable[[K], Awaitable[R]],
        *,
        max_batch: int = 64,
        max_inflight: int = 2,
    ) -> None:
        self._run_batch = run_batch
        self._run_one = run_one
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self._pending: list[tuple[K, asyncio.Future[R]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        # Draining tasks whose loop has not ended. Counted here, not from `_tasks`: a task is
        # only discarded from `_tasks` a loop turn after its loop ends, and a request arriving
        # in that turn would otherwise find no drain coming and wait until the next request.
        self._draining = 0
        self.batches = 0  # statements run (observability and tests)
        self.items = 0  # requests run (observability and tests)

    async def __call__(self, item: K) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        if self._draining < self.max_inflight:
            self._draining += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # The batch runs to the end even if this caller is cancelled: its statement is atomic.
        return await fut

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                await self._run(batch)
        finally:
            self._draining -= 1

    async def _run(self, batch: list[tuple[K, asyncio.Future[R]]]) -> None:
        try:
            await self._run_inner(batch)
        finally:  # cancelled (shutdown): its callers must not wait forever
            for _, fut in batch:
                if not fut.done():
                    fut.cancel()

    async def _run_inner(self, batch: list[tuple[K, asyncio.Future[R]]]) -> None:
        self.batches += 1
        self.items += len(batch)
        if len(batch) > 1:
            try:
                results = await self._run_batch([item for item, _ in batch])
            except Exception as exc:
                log.warning("batch_failed_retrying_singly", size=len(batch), error=repr(exc))
            else:
                for (_, fut), result in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
                return
        await asyncio.gather(*(self._one(item, fut) for item, fut in batch))

    async def _one(self, item: K, fut: asyncio.Future[R]) -> None:
        try:
            result = await self._run_one(item)
        except Exception as exc:
            if not fut.done():
                fut.set_exception(exc)
        else:
            if not fut.done():
                fut.set_result(result)
