"""The delivery role: consumes deliver tasks from mailgw.delivery and sends them over SMTP."""

from __future__ import annotations

import asyncio

from consumers.runner import Context
from gateway.bus.consumer import consume
from gateway.bus.topology import DELIVERY
from gateway.delivery.worker import Deliverer


async def run(ctx: Context, stop: asyncio.Event) -> None:
    deliverer = Deliverer(ctx.settings, ctx.pool, ctx.publisher, ctx.topology, ctx.vault)
    try:
        await consume(
            ctx.amqp, ctx.publisher, DELIVERY, deliverer.handle,
            role="delivery", prefetch=ctx.settings.delivery_prefetch, stop=stop,
        )
    finally:
        await deliverer.close()
