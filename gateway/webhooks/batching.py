"""Group concurrent small database writes into one statement: callers await their own result
(`submit`), or hand the item over and go on (`submit_nowait`; the flush reports trouble).

While the batches in flight (at most `workers`) are being written, new items queue up and
form the next batch, so a single caller pays one round trip and many concurrent callers
share a few; several workers let commits overlap (PostgreSQL groups their WAL flushes).

With `linger`, a worker holding fewer than `min_batch` items waits up to that long for more
before writing them: a statement costs the client ~110 µs of CPU whatever its size (bind,
send, receive on loopback) plus ~2.7 µs per row of `record_successes`, i.e. ~10 µs per item
in batches of 16 and ~4.5 in batches of 64. Only for items nobody waits on in a hurry
(recorded successes; `Linger` also serves the dispatcher's intake).
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
        workers: int = 1, min_batch: int = 1, linger: float = 0.0,
    ) -> None:
        self._flush = flush
        self._max = max_batch
        self._limit = workers
        self._linger = Linger(linger, min(min_batch, max_batch)) if linger > 0 else None
        self._queue: list[tuple[T, asyncio.Future[R] | None]] = []
        self._workers: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._wake_worker()
        if self._linger is not None:
            self._linger.offer(len(self._queue))
        return await future

    def submit_nowait(self, item: T) -> None:
        """Queue `item` without waiting for its result (the flush must report failures itself)."""
        self._queue.append((item, None))
        self._wake_worker()
        if self._linger is not None:
            self._linger.offer(len(self._queue))

    def hurry(self) -> None:
        """No more items are expected soon: a lingering worker writes what it has now."""
        if self._linger is not None:
            self._linger.end()

    async def idle(self) -> None:
        """Wait until everything submitted so far is flushed (shutdown: no lingering)."""
        while self._workers:
            if self._linger is not None:
                self._linger.end()
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
            if self._linger is not None and len(self._queue) < self._linger.enough:
                try:
                    await self._linger.wait()
                except asyncio.CancelledError:
                    self._cancel_queued()
                    raise
            batch, self._queue = self._queue[: self._max], self._queue[self._max :]
            try:
                results = await self._flush([item for item, _ in batch])
            except BaseException as exc:
                for _, future in batch:
                    if future is not None and not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    self._cancel_queued()
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future is not None and not future.done():
                    future.set_result(result)

    def _cancel_queued(self) -> None:
        for _, future in self._queue:
            if future is not None:
                future.cancel()
        self._queue = []


class Linger:
    """Lets a batch worker wait up to `seconds` for `enough` items before it writes them."""

    def __init__(self, seconds: float, enough: int) -> None:
        self.seconds = seconds
        self.enough = enough
        self._waiting: asyncio.Future[None] | None = None  # the worker's, while it lingers

    async def wait(self) -> None:
        """Until `offer` sees enough items, `end` is called, or the time is up."""
        loop = asyncio.get_running_loop()
        waiting: asyncio.Future[None] = loop.create_future()
        self._waiting = waiting
        timer = loop.call_later(self.seconds, self.end)
        try:
            await waiting
        finally:
            timer.cancel()
            self._waiting = None

    def offer(self, queued: int) -> None:
        """`queued` items wait now: the lingering worker goes on once they are enough."""
        if queued >= self.enough:
            self.end()

    def end(self) -> None:
        waiting = self._waiting
        if waiting is not None and not waiting.done():
            waiting.set_result(None)
