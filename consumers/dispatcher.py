"""The dispatcher role: events from `mailgw.dispatcher` become signed webhook POSTs.

Two loops share one `Dispatcher`: the broker consumer records each event's first attempts
(and acks), and the claim loop sends whatever attempts come due (retries, overflow,
attempts left behind by a crashed dispatcher).

The consumer acks in delivery order: once the oldest unsettled messages are done, a run
of successes is acked with one `multiple` ack on its highest delivery tag (one frame for a
whole intake batch instead of one per event). A message is only ever covered by an ack
once its own attempt rows are committed; a message that failed is settled on its own
(requeued, or parked when it can never succeed) before any later ack goes out.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from aio_pika.abc import AbstractIncomingMessage

from consumers.runner import Context
from gateway import metrics
from gateway.bus.consumer import park
from gateway.bus.topology import DISPATCHER
from gateway.errors import PermanentError
from gateway.logging import get_logger
from gateway.webhooks.dispatch import Dispatcher

log = get_logger(__name__)

# Events taken from the queue at once: they only become rows (batched transactions) and are
# acked, so a deep window costs little and keeps the intake batches large.
PREFETCH = 1024
ROLE = "dispatcher"

OK, REQUEUE, PARK = "ok", "requeue", "park"


@dataclass(slots=True)
class _Entry:
    message: AbstractIncomingMessage
    outcome: str | None = None
    reason: str = ""


class OrderedAcker:
    """Settles messages in delivery order, acking contiguous successes with one frame."""

    def __init__(self, ctx: Context, queue: str) -> None:
        self.ctx = ctx
        self.queue = queue
        self.pending: deque[_Entry] = deque()
        self._lock = asyncio.Lock()

    def add(self, message: AbstractIncomingMessage) -> _Entry:
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
            await last.message.ack(multiple=count > 1)
        except Exception as exc:  # channel gone: the broker redelivers them (rows are idempotent)
            log.warning("dispatcher_ack_failed", error=repr(exc))
            return
        metrics.CONSUMED.labels(ROLE, "ok").inc(count)

    async def _settle_failure(self, entry: _Entry) -> None:
        message = entry.message
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


async def consume_events(ctx: Context, dispatcher: Dispatcher, stop: asyncio.Event) -> None:
    """Consume `mailgw.dispatcher` until `stop`; in-flight events finish (and are settled) first."""
    channel = await ctx.amqp.channel()
    await channel.set_qos(prefetch_count=PREFETCH)
    q = await channel.get_queue(ctx.publisher.topology.name(DISPATCHER), ensure=False)
    acker = OrderedAcker(ctx, DISPATCHER)
    inflight: set[asyncio.Task[None]] = set()

    async def on_message(message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            inflight.add(task)
        entry = acker.add(message)
        try:
            await dispatcher.handle_event(message.body)
        except PermanentError as exc:
            log.warning("message_parked", role=ROLE, queue=DISPATCHER, reason=exc.message,
                        message_id=message.message_id)
            entry.outcome, entry.reason = PARK, exc.message
        except asyncio.CancelledError:
            entry.outcome = REQUEUE  # never acked: requeued by the broker when the channel closes
            if task is not None:
                inflight.discard(task)
            raise
        except Exception as exc:
            log.warning("message_requeued", role=ROLE, queue=DISPATCHER, error=repr(exc),
                        message_id=message.message_id)
            entry.outcome = REQUEUE
        else:
            entry.outcome = OK
        try:
            await acker.settle()
        finally:
            if task is not None:
                inflight.discard(task)

    tag = await q.consume(on_message)
    try:
        await stop.wait()
    finally:
        await q.cancel(tag)
        if inflight:
            await asyncio.wait(set(inflight), timeout=30)
        await channel.close()


async def run(ctx: Context, stop: asyncio.Event) -> None:
    async with Dispatcher(ctx.settings, ctx.pool, ctx.publisher, ctx.vault) as dispatcher:
        async with asyncio.TaskGroup() as group:
            group.create_task(dispatcher.run(stop), name="dispatcher-claims")
            group.create_task(consume_events(ctx, dispatcher, stop), name="dispatcher-events")
