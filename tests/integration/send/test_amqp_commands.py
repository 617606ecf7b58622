"""Plain AMQP producers: `send` on mailgw.commands, answers on reply_to, invalid → dead-lettered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import asyncpg
import orjson
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from gateway.bus.topology import COMMANDS, DEAD, Topology
from gateway.config import Settings
from tests.integration.send.conftest import RouterControl, World
from tests.support.services import AMQP_URL

pytestmark = pytest.mark.integration


class Producer:
    def __init__(self, channel: AbstractChannel, replies: AbstractQueue, topology: Topology) -> None:
        self.channel, self.replies, self.topology = channel, replies, topology

    async def send(self, body: dict[str, Any] | bytes, *, message_id: str | None = None,
                   key: str = "send", correlation_id: str = "c1") -> None:
        ex = await self.channel.get_exchange(self.topology.name(COMMANDS))
        await ex.publish(
            aio_pika.Message(body if isinstance(body, bytes) else orjson.dumps(body),
                             message_id=message_id, correlation_id=correlation_id,
                             reply_to=self.replies.name, content_type="application/json"),
            key,
        )

    async def answer(self) -> AbstractIncomingMessage:
        return await first(self.replies)


async def first(queue: AbstractQueue) -> AbstractIncomingMessage:
    async with queue.iterator() as it:
        async for message in it:
            await message.ack()
            return message
    raise AssertionError("queue closed")


@pytest.fixture
async def idle_producer(settings: Settings) -> AsyncIterator[Producer]:
    """A producer while no router runs (the topology declared, as any process would)."""
    conn = await aio_pika.connect(AMQP_URL)
    channel = await conn.channel()
    await Topology(settings).declare(channel)
    replies = await channel.declare_queue(exclusive=True)
    try:
        yield Producer(channel, replies, Topology(settings))
    finally:
        await conn.close()


@pytest.fixture
async def producer(settings: Settings, router: RouterControl) -> AsyncIterator[Producer]:
    conn = await aio_pika.connect(AMQP_URL)
    channel = await conn.channel()
    replies = await channel.declare_queue(exclusive=True)
    try:
        yield Producer(channel, replies, Topology(settings))
    finally:
        await conn.close()


def command(world: World, **extra: Any) -> dict[str, Any]:
    return {"workspaceId": world.tenant.workspace_id, "identity": world.handle,
            "to": ["a@northwind.example", "b@northwind.example"], "subject": "Hi", "text": "x", **extra}


async def test_round_trip(producer: Producer, world: World, pool: asyncpg.Pool) -> None:
    await producer.send(command(world), message_id="mq-1", correlation_id="corr-7")
    reply = await asyncio.wait_for(producer.answer(), 10)
    assert reply.correlation_id == "corr-7" and reply.content_type == "application/json"
    assert reply.headers["status"] == 202
    body = orjson.loads(reply.body)
    assert body["accepted"] == 2 and body["identity"] == world.handle
    # message_id is the idempotency key: a duplicate is answered with the same result
    await producer.send(command(world), message_id="mq-1", correlation_id="corr-8")
    again = await asyncio.wait_for(producer.answer(), 10)
    assert again.headers["status"] == 202 and orjson.loads(again.body) == body
    assert await pool.fetchval("SELECT count(*) FROM messages") == 2


async def test_invalid_command_answered_and_dead_lettered(
    producer: Producer, world: World, settings: Settings
) -> None:
    dead = await producer.channel.declare_queue(exclusive=True)
    await dead.bind(Topology(settings).name(DEAD), routing_key="")
    bad = command(world, to=["a@northwind.example", "nope"])
    await producer.send(bad, message_id="mq-bad", correlation_id="corr-bad")
    reply = await asyncio.wait_for(producer.answer(), 10)
    assert reply.correlation_id == "corr-bad" and reply.headers["status"] == 400
    err = orjson.loads(reply.body)
    assert err["error"] == "Bad Request" and err["code"] == 400
    assert {"field": "to[1]", "message": "Invalid email format"} in err["details"]
    parked = await asyncio.wait_for(first(dead), 10)
    assert orjson.loads(parked.body) == bad
    assert "400" in str(parked.headers["x-mailgw-reason"])
    # unknown identity, malformed JSON: the same treatment
    await producer.send(command(world, identity="ghost@example.com"), correlation_id="c404")
    reply = await asyncio.wait_for(producer.answer(), 10)
    assert reply.headers["status"] == 404
    await producer.send(b"{not json", correlation_id="cjson")
    reply = await asyncio.wait_for(producer.answer(), 10)
    assert reply.headers["status"] == 400 and orjson.loads(reply.body)["message"] == "Malformed JSON"


async def test_duplicates_queued_while_router_down_send_once(
    idle_producer: Producer, world: World, router_ctl: RouterControl, pool: asyncpg.Pool
) -> None:
    """The router records the answer under the key with the send: duplicates replay it."""
    for i in range(5):
        await idle_producer.send(command(world), message_id="dup-key", correlation_id=f"d{i}")
    await router_ctl.start()
    answers = [await asyncio.wait_for(idle_producer.answer(), 10) for _ in range(5)]
    assert sorted(a.correlation_id or "" for a in answers) == [f"d{i}" for i in range(5)]
    bodies = [orjson.loads(a.body) for a in answers]
    assert all(b == bodies[0] for b in bodies) and bodies[0]["accepted"] == 2
    assert sum(1 for a in answers if a.headers.get("x-mailgw-replayed")) == 4
    assert await pool.fetchval("SELECT count(*) FROM messages") == 2
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE routing_key = 'deliver'") == 2
