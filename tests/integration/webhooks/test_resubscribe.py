"""The dispatcher consumes through aiormq directly: when the broker closes its channel, the
robust channel reopens and the dispatcher subscribes again (no broker restart needed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiormq
import pytest
from aiohttp.test_utils import TestClient

from consumers.runner import Context
from tests.integration.webhooks.conftest import Receiver, create_hook, publish_event
from tests.support.factories import Tenant

pytestmark = pytest.mark.integration


def consuming_channels(ctx: Context) -> list[aiormq.abc.AbstractChannel]:
    """The open aiormq channels of the context's connection that have a consumer."""
    transport = ctx.amqp.transport  # type: ignore[attr-defined]
    assert transport is not None
    return [ch for ch in transport.connection.channels.values()
            if ch is not None and not ch.is_closed and ch.consumers]


async def test_events_flow_again_after_the_broker_closes_the_channel(
    client: TestClient, ws: Tenant,  # type: ignore[type-arg]
    make_receiver: Callable[..., Awaitable[Receiver]],
    start_dispatcher: Callable[..., Awaitable[Context]],
) -> None:
    receiver = await make_receiver()
    await create_hook(client, ws, receiver.url)
    ctx = await start_dispatcher()
    first = await publish_event(ctx, "email.sent", ws.workspace_id)
    await receiver.wait_for(1)

    [old] = consuming_channels(ctx)
    await old.basic_ack(10**9)  # an unknown delivery tag: the broker closes the channel
    deadline = time.monotonic() + 15
    while not (consuming_channels(ctx) and consuming_channels(ctx)[0] is not old):
        assert time.monotonic() < deadline, "the dispatcher did not subscribe again"
        await asyncio.sleep(0.05)  # polling the channels: the condition is checked every round

    second = await publish_event(ctx, "email.sent", ws.workspace_id)
    seen = await receiver.wait_for(2)
    ids = [s.headers["webhook-id"] for s in seen]
    assert first["id"] in ids and second["id"] in ids
