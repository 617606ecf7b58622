"""Group concurrent small database writes into one statement: callers await their own result
(`submit`), or hand the item over and go on (`submit_nowait`; the flush reports trouble).

While the batches in flight (at most `workers`) are being written, new items queue up and
form the next batch, so a single caller pays one round trip and many concurrent callers
share a few; several workers let commits overlap (PostgreSQL groups their WAL flushes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(
        self, flush: Callable[[list[T]], Awaitable[Sequence[R]]], *, max_batch: int = 256,
        workers: int = 1,
    ) -> None:
        self._flush = flush
        self._max = max_batch
        self._limit = workers
        self._queue: list[tuple[T, asyncio.Future[R] | None]] = []
        self._workers: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._wake_worker()
        return await future

    def submit_nowait(self, item: T) -> None:
        """Queue `item` without waiting for its result (the flush must report failures itself)."""
        self._queue.append((item, None))
        self._wake_worker()

    async def idle(self) -> None:
        """Wait until everything submitted so far is flushed (shutdown)."""
        while self._workers:
            await asyncio.wait(set(self._workers))

    def _wake_worker(self) -> None:
        if len(self._workers) < self._limit:
            self._workers.add(asyncio.create_task(self._drain()))

    async def _drain(self) -> None:
        try:
            await self._drain_queue()
        finally:
            # Leave the set with no await after the last look at the queue: an item
            # submitted from here on starts a worker of its own (a done callback would run
            # later, and an item submitted in between would wait for the next submit).
            task = asyncio.current_task()
            if task is not None:
                self._workers.discard(task)

    async def _drain_queue(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max], self._queue[self._max :]
            try:
                results = await self._flush([item for item, _ in batch])
            except BaseException as exc:
                for _, future in batch:
                    if future is not None and not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    for _, future in self._queue:
                        if future is not None:
                            future.cancel()
                    self._queue = []
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future is not None and not future.done():
                    future.set_result(result)
