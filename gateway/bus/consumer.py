"""Consuming a work queue: ack after success, park permanent failures, requeue the rest.

Handlers raise `PermanentError` for messages that will never succeed (they are copied to
`mailgw.dead` with the reason in headers, then acked) and anything else for transient
trouble (nack + requeue; the queue's delivery limit parks a message that keeps failing).
Successes are acked in delivery order, several per frame (`gateway.bus.acks`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from gateway import metrics
from gateway.bus.acks import Count, OrderedAcker, Outcome, SettleFailure, ack_incoming
from gateway.bus.publisher import Publisher
from gateway.bus.topology import DEAD
from gateway.errors import PermanentError
from gateway.logging import get_logger

log = get_logger(__name__)
MessageHandler = Callable[[AbstractIncomingMessage], Awaitable[None]]


async def park(publisher: Publisher, message: AbstractIncomingMessage, queue: str, reason: str) -> None:
    """Copy a message to the dead-letter exchange with why it was parked."""
    headers = dict(message.headers or {})
    headers.update({"x-mailgw-reason": reason[:1000], "x-mailgw-queue": queue})
    await publisher.publish(
        DEAD, "", message.body, message_id=message.message_id, headers=headers,
        correlation_id=message.correlation_id,
    )


def failure_settler(publisher: Publisher, queue: str) -> SettleFailure:
    """How a consumer of `queue` settles a failed message: park it (copy to `mailgw.dead`,
    then ack) or requeue it; a park that cannot be published is requeued instead."""

    async def settle(message: AbstractIncomingMessage, outcome: Outcome, reason: str) -> str:
        if outcome == "park":
            try:
                await park(publisher, message, queue, reason)
            except Exception:
                await message.nack(requeue=True)
                return "requeued"
            await message.ack()
            return "parked"
        await message.nack(requeue=True)
        return "requeued"

    return settle


def counter(role: str) -> Count:
    """Counts settled messages of `role` in the consumed-messages metric."""

    def count(label: str, n: int) -> None:
        metrics.CONSUMED.labels(role, label).inc(n)

    return count


async def consume(
    amqp: AbstractRobustConnection,
    publisher: Publisher,
    queue: str,
    handler: MessageHandler,
    *,
    role: str,
    prefetch: int,
    stop: asyncio.Event,
) -> None:
    """Consume `queue` (logical name) until `stop` is set; in-flight messages finish first.

    Settling goes through `OrderedAcker`: contiguous successes share one `multiple` ack, and
    a message is only ever covered by an ack once its own handler has returned.
    """
    channel = await amqp.channel()
    await channel.set_qos(prefetch_count=prefetch)
    q = await channel.get_queue(publisher.topology.name(queue), ensure=False)
    inflight: set[asyncio.Task[None]] = set()

    # A quarter of the window may wait behind a slow message before being settled singly.
    acker: OrderedAcker[AbstractIncomingMessage] = OrderedAcker(
        failure_settler(publisher, queue), counter(role), max_held=prefetch // 4, ack=ack_incoming)

    async def on_message(message: AbstractIncomingMessage) -> None:
        delivery = acker.track(message)  # first, so deliveries are tracked in tag order
        task = asyncio.current_task()
        if task is not None:
            inflight.add(task)
        try:
            try:
                await handler(message)
            except PermanentError as exc:
                log.warning("message_parked", role=role, queue=queue, reason=exc.message,
                            message_id=message.message_id)
                acker.done(delivery, "park", exc.message)
            except asyncio.CancelledError:
                acker.finish(delivery, "requeue")  # settled later, or requeued by the broker
                raise
            except Exception as exc:
                log.warning("message_requeued", role=role, queue=queue, error=repr(exc),
                            message_id=message.message_id)
                acker.done(delivery, "requeue")
            else:
                acker.done(delivery, "ok")
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
        await acker.close()
        await channel.close()
