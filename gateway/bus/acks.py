"""Settling a consumer's deliveries with as few frames as the AMQP rules allow.

An ack with `multiple=True` on delivery tag T acknowledges every unsettled delivery of the
channel up to T, so it may only go out once every one of them has succeeded. `OrderedAcker`
keeps the deliveries in arrival (tag) order and, whenever the oldest ones are finished, acks
the contiguous run of successes with one frame (one write, and one settlement for the broker,
instead of one per message). A failure is settled on its own, in order: a requeue (nack) or a
park goes out before any later ack can cover its tag.

Settling runs in its own task, started when the first handler of a loop turn finishes: the
handlers that finish in the same turn (publisher confirms and database batches often resume
several at once) share its frame, with no timer. A handler does not wait for its ack.

A slow message at the head must not hold the acks of everything behind it (their prefetch
slots would stay taken): once `max_held` finished messages wait behind an unfinished one,
they are settled one by one, as a plain consumer would.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from aio_pika.abc import AbstractIncomingMessage

from gateway.logging import get_logger

log = get_logger(__name__)

Outcome = Literal["ok", "requeue", "park"]


class Settleable(Protocol):
    """A delivered message: aio-pika's, or aiormq's `DeliveredMessage` for a raw consumer."""

    @property
    def channel(self) -> object: ...


M = TypeVar("M", bound=Settleable)
# Settles one failure (nack or park); returns the metric label of what was done.
SettleFailure = Callable[[AbstractIncomingMessage, Outcome, str], Awaitable[str]]
# Counts settled messages: (metric label, count).
Count = Callable[[str, int], None]


async def ack_incoming(message: AbstractIncomingMessage, multiple: bool) -> None:
    """Acks an aio-pika message (and, with `multiple`, every earlier one of its channel)."""
    await message.ack(multiple=multiple)


@dataclass(slots=True)
class Delivery(Generic[M]):
    """One delivery being handled; `outcome` is set once its handler has finished."""

    message: M
    outcome: Outcome | None = None
    reason: str = ""


class OrderedAcker(Generic[M]):
    def __init__(
        self,
        settle_failure: Callable[[M, Outcome, str], Awaitable[str]],
        count: Count,
        *,
        max_held: int,
        ack: Callable[[M, bool], Awaitable[None]],
    ) -> None:
        self._settle_failure = settle_failure
        self._count = count
        self._send_ack = ack
        self.max_held = max(1, max_held)
        self._pending: deque[Delivery[M]] = deque()
        self._held = 0  # finished deliveries still in _pending
        self._lock = asyncio.Lock()
        self._scheduled = False  # a settling task is started and has not begun yet
        self._tasks: set[asyncio.Task[None]] = set()
        self.frames = 0  # ack/nack/park operations sent (observability and tests)

    def track(self, message: M) -> Delivery[M]:
        """Register a delivery as it arrives (in tag order, before its handler awaits)."""
        delivery: Delivery[M] = Delivery(message)
        self._pending.append(delivery)
        return delivery

    def finish(self, delivery: Delivery[M], outcome: Outcome, reason: str = "") -> None:
        """Record the handler's outcome without settling (e.g. from a cancelled handler)."""
        if delivery.outcome is None:
            delivery.outcome, delivery.reason = outcome, reason
            self._held += 1

    def done(self, delivery: Delivery[M], outcome: Outcome, reason: str = "") -> None:
        """Record the outcome; the settling task (started now unless one is pending) sends it."""
        self.finish(delivery, outcome, reason)
        if not self._scheduled:
            self._scheduled = True
            task = asyncio.create_task(self._settle_soon())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _settle_soon(self) -> None:
        # Started from a handler, this runs once the other handlers of the turn have run.
        self._scheduled = False  # a handler finishing from now on starts the next one
        await self.settle()

    async def close(self) -> None:
        """Settle every finished delivery (call once the handlers have ended)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        await self.settle(everything=True)

    async def settle(self, *, everything: bool = False) -> None:
        """Settle the finished deliveries at the head; `everything`: also those behind an
        unfinished one (one by one), as when the consumer stops."""
        async with self._lock:
            run: Delivery[M] | None = None  # newest success of the current run, not yet acked
            count = 0
            while self._pending and self._pending[0].outcome is not None:
                delivery = self._pending.popleft()
                self._held -= 1
                same_channel = run is None or run.message.channel is delivery.message.channel
                if delivery.outcome == "ok" and same_channel:
                    run, count = delivery, count + 1
                    continue
                if run is not None:  # everything before this tag first
                    await self._ack(run, count)
                    run, count = None, 0
                if delivery.outcome == "ok":  # a success on another (reopened) channel
                    run, count = delivery, 1
                else:
                    await self._failure(delivery)
            if run is not None:
                await self._ack(run, count)
            if self._held and (everything or self._held >= self.max_held):
                await self._settle_held()

    async def _settle_held(self) -> None:
        """Settle finished deliveries behind an unfinished one, each with its own frame."""
        keep: deque[Delivery[M]] = deque()
        finished: list[Delivery[M]] = []
        for delivery in self._pending:
            (keep if delivery.outcome is None else finished).append(delivery)
        self._pending = keep
        self._held = 0
        for delivery in finished:
            if delivery.outcome == "ok":
                await self._ack(delivery, 1, multiple=False)
            else:
                await self._failure(delivery)

    async def _ack(self, last: Delivery[M], count: int, *, multiple: bool | None = None) -> None:
        self.frames += 1
        try:
            await self._send_ack(last.message, count > 1 if multiple is None else multiple)
        except Exception as exc:  # channel gone: the broker redelivers them
            log.warning("ack_failed", count=count, error=repr(exc))
            return
        self._count("ok", count)

    async def _failure(self, delivery: Delivery[M]) -> None:
        assert delivery.outcome is not None and delivery.outcome != "ok"
        self.frames += 1
        try:
            label = await self._settle_failure(delivery.message, delivery.outcome, delivery.reason)
        except Exception as exc:  # channel gone: the broker redelivers it
            log.warning("settle_failed", error=repr(exc), outcome=delivery.outcome)
            return
        self._count(label, 1)
