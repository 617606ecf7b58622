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
from collections.abc import Callable, Coroutine
from typing import Any

import aiormq
from aio_pika.abc import AbstractRobustChannel
from aio_pika.message import IncomingMessage
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from consumers.runner import Context
from gateway.bus.acks import Delivery, OrderedAcker, Outcome
from gateway.bus.consumer import counter, failure_settler
from gateway.bus.topology import DISPATCHER
from gateway.errors import PermanentError
from gateway.logging import get_logger
from gateway.webhooks.batching import Linger
from gateway.webhooks.dispatch import Dispatcher, parse_event

log = get_logger(__name__)

# Events taken from the queue at once: they only become rows (batched transactions) and are
# acked, so a deep window costs little and keeps the intake batches large.
PREFETCH = 4096
BATCH = 512  # events per intake transaction
WORKERS = 1  # intake transactions in flight
# With fewer events waiting, an intake worker waits up to LINGER seconds for FULL_BATCH of
# them: an intake batch costs two statements (~110 µs of CPU each whatever their size; bench:
# 41 events per batch without it, 100 with it); acks and first POSTs come at most that late.
FULL_BATCH = 128
LINGER = 0.005
ROLE = "dispatcher"

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


def _acker(ctx: Context) -> OrderedAcker[DeliveredMessage]:
    """The shared ordered acker, acking on the raw channel; failures (rare) go through
    aio-pika's message helpers and the consumers' usual park-or-requeue."""
    settle = failure_settler(ctx.publisher, DISPATCHER)

    async def settle_failure(message: DeliveredMessage, outcome: Outcome, reason: str) -> str:
        return await settle(IncomingMessage(message), outcome, reason)

    async def ack(message: DeliveredMessage, multiple: bool) -> None:
        await message.channel.basic_ack(_tag(message), multiple=multiple)

    # Intake batches finish together, so nothing waits behind an unfinished head for long.
    return OrderedAcker(settle_failure, counter(ROLE), max_held=PREFETCH, ack=ack)


class Intake:
    """Groups delivered events into intake batches.

    The broker's callback only queues the message (no future per message, nothing awaited);
    at most `WORKERS` batches of at most `BATCH` events are recorded at once (their commits
    overlap), each after waiting up to `LINGER` for `FULL_BATCH` events, and each batch is
    settled (acked in delivery order) once recorded.
    """

    def __init__(self, dispatcher: Dispatcher, acker: OrderedAcker[DeliveredMessage],
                 *, linger: float = LINGER) -> None:
        self.dispatcher = dispatcher
        self.acker = acker
        self.waiting: list[Delivery[DeliveredMessage]] = []
        self.workers: set[asyncio.Task[None]] = set()
        self.linger = Linger(linger, FULL_BATCH) if linger > 0 else None

    async def on_message(self, message: DeliveredMessage) -> None:
        self.waiting.append(self.acker.track(message))
        if len(self.workers) < WORKERS:
            self.workers.add(asyncio.create_task(self._drain(), name="dispatcher-intake"))
        elif self.linger is not None:
            self.linger.offer(len(self.waiting))

    async def _drain(self) -> None:
        try:
            while self.waiting:
                if self.linger is not None and len(self.waiting) < self.linger.enough:
                    # Never acked if cancelled here: the broker requeues them on channel close.
                    await self.linger.wait()
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

    async def _record(self, batch: list[Delivery[DeliveredMessage]]) -> None:
        parsed: list[tuple[dict[str, Any], bytes]] = []
        entries: list[Delivery[DeliveredMessage]] = []
        for entry in batch:
            try:
                parsed.append((parse_event(entry.message.body), entry.message.body))
            except PermanentError as exc:
                log.warning("message_parked", role=ROLE, queue=DISPATCHER, reason=exc.message,
                            message_id=entry.message.header.properties.message_id)
                self.acker.finish(entry, "park", exc.message)
                continue
            entries.append(entry)
        if not entries:
            return
        try:
            await self.dispatcher.intake(parsed)
        except asyncio.CancelledError:
            for entry in entries:  # never acked: requeued by the broker when the channel closes
                self.acker.finish(entry, "requeue")
            raise
        except Exception as exc:
            log.warning("messages_requeued", role=ROLE, queue=DISPATCHER, error=repr(exc),
                        count=len(entries))
            for entry in entries:
                self.acker.finish(entry, "requeue")
        else:
            for entry in entries:
                self.acker.finish(entry, "ok")

    async def finish(self, seconds: float) -> None:
        """Let the batches in progress finish and be settled (shutdown: no lingering)."""
        if self.linger is not None:
            self.linger.end()
        if self.workers:
            await asyncio.wait(set(self.workers), timeout=seconds)


async def consume_events(ctx: Context, dispatcher: Dispatcher, stop: asyncio.Event) -> None:
    """Consume `mailgw.dispatcher` until `stop`; in-flight events finish (and are settled) first."""
    channel = await ctx.amqp.channel()
    assert isinstance(channel, AbstractRobustChannel)  # a robust connection's channels are
    await channel.set_qos(prefetch_count=PREFETCH)
    intake = Intake(dispatcher, _acker(ctx))
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
