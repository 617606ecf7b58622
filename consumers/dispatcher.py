"""The dispatcher role: events from `mailgw.dispatcher` become signed webhook POSTs.

Two loops share one `Dispatcher`: the broker consumer records each event's first attempts
(and acks), and the claim loop sends whatever attempts come due (retries, overflow,
attempts left behind by a crashed dispatcher).
"""

from __future__ import annotations

import asyncio

from aio_pika.abc import AbstractIncomingMessage

from consumers.runner import Context
from gateway.bus.consumer import consume
from gateway.bus.topology import DISPATCHER
from gateway.webhooks.dispatch import Dispatcher

# Events taken from the queue at once: they only become rows (one batched transaction) and
# are acked, so a deep window costs little and makes the batches large.
PREFETCH = 256


async def run(ctx: Context, stop: asyncio.Event) -> None:
    async with Dispatcher(ctx.settings, ctx.pool, ctx.publisher, ctx.vault) as dispatcher:

        async def handle(message: AbstractIncomingMessage) -> None:
            await dispatcher.handle_event(message.body)

        async with asyncio.TaskGroup() as group:
            group.create_task(dispatcher.run(stop), name="dispatcher-claims")
            group.create_task(
                consume(
                    ctx.amqp, ctx.publisher, DISPATCHER, handle, role="dispatcher",
                    prefetch=PREFETCH, stop=stop,
                ),
                name="dispatcher-events",
            )
