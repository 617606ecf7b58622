"""The dispatcher role: events from `mailgw.dispatcher` become signed webhook POSTs.

Two loops share one `Dispatcher`: the broker consumer records each event's first attempts
(and acks), and the claim loop sends whatever attempts come due (retries, overflow,
attempts left behind by a crashed dispatcher).

Events are consumed through the robust channel's underlying aiormq channel (`Subscription`):
aio-pika's `IncomingMessage` and second task per message were ~6% of a delivery's CPU.

The consumer acks in delivery order: once the oldest unsettled messages are done, a run
of successes is acked with one `multiple` ack on its highest delivery tag (one frame for a
whole intake batch instead of one per event). A message is only ever covered by an ack
once its own attempt rows are committed; a message that failed is settled on its own
(requeued, or parked when it can never succeed) before any later ack goes out.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiormq
from aio_pika.abc import AbstractRobustChannel
from aio_pika.message import IncomingMessage
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from consumers.runner import Context
from gateway import metrics
from gateway.bus.consumer import park
from gateway.bus.topology import DISPATCHER
from gateway.errors import PermanentError
from gateway.logging import get_logger
from gateway.webhooks.dispatch import Dispatcher, parse_event

log = get_logger(__name__)

# Events taken from the queue at once: they only become rows (batched transactions) and are
# acked, so a deep window costs little and keeps the intake batches large.
PREFETCH = 4096
BATCH = 512  # events per intake transaction
WORKERS = 1  # intake transactions in flight
ROLE = "dispatcher"

OK, REQUEUE, PARK = "ok", "requeue", "park"


def _tag(message: DeliveredMessage) -> int:
    delivery = message.delivery
    assert isinstance(delivery, Basic.Deliver) and delivery.delivery_tag is not None
    return delivery.delivery_tag


class Subscription:
    """A consumer on the aiormq channel under a robust aio-pika channel, subscribed again
    whenever the channel reopens (aio-pika restores only the consumers it made itself).

    Messages of a closed channel are redelivered by the broker; their acks on the old
    channel fail and are only logged (the intake's rows are idempotent).
    """

    def __init__(self, channel: AbstractRobustChannel, queue: str,
                 callback: Callable[[DeliveredMessage], Coroutine[Any, Any, None]]) -> None:
        self.channel = channel
        self.queue = queue
        self.callback = callback
        self._raw: aiormq.abc.AbstractChannel | None = None
        self._tag = ""

    async def start(self) -> None:
        self.channel.reopen_callbacks.add(self._resubscribe)
        await self._subscribe()

    async def _subscribe(self) -> None:
        raw = await self.channel.get_underlay_channel()
        ok = await raw.basic_consume(self.queue, self.callback)
        self._raw, self._tag = raw, ok.consumer_tag or ""

    async def _resubscribe(self, _channel: object) -> None:
        try:
            await self._subscribe()
        except Exception as exc:  # the channel closed again: its next reopen subscribes
            log.error("dispatcher_resubscribe_failed", queue=self.queue, error=repr(exc))
            return
        log.info("dispatcher_resubscribed", queue=self.queue)

    async def stop(self) -> None:
        self.channel.reopen_callbacks.discard(self._resubscribe)
        raw = self._raw
        if raw is not None and not raw.is_closed:
            await raw.basic_cancel(self._tag)


@dataclass(slots=True)
class _Entry:
    message: DeliveredMessage
    outcome: str | None = None
    reason: str = ""


class OrderedAcker:
    """Settles messages in delivery order, acking contiguous successes with one frame."""

    def __init__(self, ctx: Context, queue: str) -> None:
        self.ctx = ctx
        self.queue = queue
        self.pending: deque[_Entry] = deque()
        self._lock = asyncio.Lock()

    def add(self, message: DeliveredMessage) -> _Entry:
        entry = _Entry(message)
        self.pending.append(entry)
        return entry

    async def settle(self) -> None:
        async with self._lock:
            run: _Entry | None = None  # the newest success of the current run, not yet acked
            count = 0
            while self.pending and self.pending[0].outcome is not None:
                entry = self.pending.popleft()
                if entry.outcome == OK:
                    if run is not None and run.message.channel is not entry.message.channel:
                        await self._ack_run(run, count)
                        count = 0
                    run, count = entry, count + 1
                    continue
                if run is not None:  # settle the successes before it first (tag order)
                    await self._ack_run(run, count)
                    run, count = None, 0
                await self._settle_failure(entry)
            if run is not None:
                await self._ack_run(run, count)

    async def _ack_run(self, last: _Entry, count: int) -> None:
        try:
            await last.message.channel.basic_ack(_tag(last.message), multiple=count > 1)
        except Exception as exc:  # channel gone: the broker redelivers them (rows are idempotent)
            log.warning("dispatcher_ack_failed", error=repr(exc))
            return
        metrics.CONSUMED.labels(ROLE, "ok").inc(count)

    async def _settle_failure(self, entry: _Entry) -> None:
        message = IncomingMessage(entry.message)  # rare: aio-pika's helpers are worth it here
        try:
            if entry.outcome == PARK:
                try:
                    await park(self.ctx.publisher, message, self.queue, entry.reason)
                except Exception:
                    await message.nack(requeue=True)
                else:
                    await message.ack()
                    metrics.CONSUMED.labels(ROLE, "parked").inc()
            else:
                await message.nack(requeue=True)
                metrics.CONSUMED.labels(ROLE, "requeued").inc()
        except Exception as exc:
            log.warning("dispatcher_settle_failed", error=repr(exc))


class Intake:
    """Groups delivered events into intake batches.

    The broker's callback only queues the message (no future per message, nothing awaited);
    at most `WORKERS` batches of at most `BATCH` events are recorded at once (their commits
    overlap), and each batch is settled (acked in delivery order) once recorded.
    """

    def __init__(self, dispatcher: Dispatcher, acker: OrderedAcker) -> None:
        self.dispatcher = dispatcher
        self.acker = acker
        self.waiting: list[_Entry] = []
        self.workers: set[asyncio.Task[None]] = set()

    async def on_message(self, message: DeliveredMessage) -> None:
        self.waiting.append(self.acker.add(message))
        if len(self.workers) < WORKERS:
            self.workers.add(asyncio.create_task(self._drain(), name="dispatcher-intake"))

    async def _drain(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting[:BATCH], self.waiting[BATCH:]
                try:
                    await self._record(batch)
                finally:
                    await self.acker.settle()
        finally:
            # Leave the set with no await after the last look at `waiting`: a message that
            # arrives from here on starts a worker of its own.
            task = asyncio.current_task()
            if task is not None:
                self.workers.discard(task)

    async def _record(self, batch: list[_Entry]) -> None:
        parsed: list[tuple[dict[str, Any], bytes]] = []
        entries: list[_Entry] = []
        for entry in batch:
            try:
                parsed.append((parse_event(entry.message.body), entry.message.body))
            except PermanentError as exc:
                log.warning("message_parked", role=ROLE, queue=DISPATCHER, reason=exc.message,
                            message_id=entry.message.header.properties.message_id)
                entry.outcome, entry.reason = PARK, exc.message
                continue
            entries.append(entry)
        if not entries:
            return
        try:
            await self.dispatcher.intake(parsed)
        except asyncio.CancelledError:
            for entry in entries:  # never acked: requeued by the broker when the channel closes
                entry.outcome = REQUEUE
            raise
        except Exception as exc:
            log.warning("messages_requeued", role=ROLE, queue=DISPATCHER, error=repr(exc),
                        count=len(entries))
            for entry in entries:
                entry.outcome = REQUEUE
        else:
            for entry in entries:
                entry.outcome = OK

    async def finish(self, seconds: float) -> None:
        """Let the batches in progress finish and be settled (shutdown)."""
        if self.workers:
            await asyncio.wait(set(self.workers), timeout=seconds)


async def consume_events(ctx: Context, dispatcher: Dispatcher, stop: asyncio.Event) -> None:
    """Consume `mailgw.dispatcher` until `stop`; in-flight events finish (and are settled) first."""
    channel = await ctx.amqp.channel()
    assert isinstance(channel, AbstractRobustChannel)  # a robust connection's channels are
    await channel.set_qos(prefetch_count=PREFETCH)
    intake = Intake(dispatcher, OrderedAcker(ctx, DISPATCHER))
    subscription = Subscription(channel, ctx.publisher.topology.name(DISPATCHER), intake.on_message)
    await subscription.start()
    try:
        await stop.wait()
    finally:
        await subscription.stop()
        await intake.finish(30)
        await channel.close()


async def run(ctx: Context, stop: asyncio.Event) -> None:
    async with Dispatcher(ctx.settings, ctx.pool, ctx.publisher, ctx.vault) as dispatcher:
        async with asyncio.TaskGroup() as group:
            group.create_task(dispatcher.run(stop), name="dispatcher-claims")
            group.create_task(consume_events(ctx, dispatcher, stop), name="dispatcher-events")
