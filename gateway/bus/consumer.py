"""Consuming a work queue: ack after success, park permanent failures, requeue the rest.

Handlers raise `PermanentError` for messages that will never succeed (they are copied to
`mailgw.dead` with the reason in headers, then acked) and anything else for transient
trouble (nack + requeue; the queue's delivery limit parks a message that keeps failing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from gateway import metrics
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
    """Consume `queue` (logical name) until `stop` is set; in-flight messages finish first."""
    channel = await amqp.channel()
    await channel.set_qos(prefetch_count=prefetch)
    q = await channel.get_queue(publisher.topology.name(queue), ensure=False)
    inflight: set[asyncio.Task[None]] = set()

    async def on_message(message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            inflight.add(task)
        try:
            await handler(message)
        except PermanentError as exc:
            log.warning("message_parked", role=role, queue=queue, reason=exc.message,
                        message_id=message.message_id)
            try:
                await park(publisher, message, queue, exc.message)
                await message.ack()
                metrics.CONSUMED.labels(role, "parked").inc()
            except Exception:
                await message.nack(requeue=True)
        except asyncio.CancelledError:
            await message.nack(requeue=True)
            raise
        except Exception as exc:
            log.warning("message_requeued", role=role, queue=queue, error=repr(exc),
                        message_id=message.message_id)
            metrics.CONSUMED.labels(role, "requeued").inc()
            await message.nack(requeue=True)
        else:
            await message.ack()
            metrics.CONSUMED.labels(role, "ok").inc()
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
