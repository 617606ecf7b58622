"""AMQP topology and publisher against the real broker: declare, unroutable, dead-lettering."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from gateway.bus.batch_publish import Outgoing, publish_many
from gateway.bus.consumer import consume
from gateway.bus.publisher import Publisher, PublishFailed, UnroutableError
from gateway.bus.topology import DEAD, DELIVER_KEY, DELIVERY, Topology, connect
from gateway.config import Settings
from gateway.errors import PermanentError

pytestmark = pytest.mark.integration


@pytest.fixture
async def amqp(settings: Settings) -> AsyncIterator[AbstractRobustConnection]:
    conn = await connect(settings, "test-topology")
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def publisher(amqp: AbstractRobustConnection, settings: Settings) -> Publisher:
    topology = Topology(settings)
    channel = await amqp.channel()
    await topology.declare(channel)
    await topology.declare(channel)  # twice: harmless
    await channel.close()
    return await Publisher.open(amqp, topology)


async def test_declare_twice_and_quorum_arguments(
    publisher: Publisher, amqp: AbstractRobustConnection
) -> None:
    topology = publisher.topology
    for spec in topology.queues():
        assert spec.arguments["x-queue-type"] == "quorum"
    work = {q.name: q.arguments for q in topology.queues()}[DELIVERY]
    assert work["x-delivery-limit"] > 0 and work["x-dead-letter-exchange"] == topology.name(DEAD)
    # The broker holds the queue as quorum: re-declaring it as classic is refused.
    channel = await amqp.channel()
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
        await channel.declare_queue(
            topology.name(DELIVERY), durable=True, arguments={"x-queue-type": "classic"}
        )


async def test_unroutable_publish_raises(publisher: Publisher) -> None:
    with pytest.raises(UnroutableError):
        await publisher.publish(DELIVERY, "no-such-key", b"{}")
    with pytest.raises(UnroutableError):
        await publisher.publish("", "no-such-queue", b"{}")
    await publisher.publish(DELIVERY, DELIVER_KEY, b"{}")  # routable: confirmed


async def test_permanent_error_parks_in_dead_with_reason(
    publisher: Publisher, amqp: AbstractRobustConnection
) -> None:
    stop = asyncio.Event()

    async def handler(message: AbstractIncomingMessage) -> None:
        raise PermanentError("cannot ever deliver this")

    worker = asyncio.create_task(
        consume(amqp, publisher, DELIVERY, handler, role="test", prefetch=1, stop=stop)
    )
    parked: asyncio.Future[AbstractIncomingMessage] = asyncio.get_running_loop().create_future()
    channel = await amqp.channel()
    dead = await channel.get_queue(publisher.topology.name(DEAD), ensure=False)

    async def on_dead(message: AbstractIncomingMessage) -> None:
        await message.ack()
        if not parked.done():
            parked.set_result(message)

    tag = await dead.consume(on_dead)
    try:
        await publisher.publish(DELIVERY, DELIVER_KEY, b'{"messageId": "msg_x"}', message_id="deliver:msg_x")
        message = await asyncio.wait_for(parked, timeout=20)
    finally:
        await dead.cancel(tag)
        stop.set()
        await asyncio.wait_for(worker, timeout=20)
        await channel.close()
    assert message.body == b'{"messageId": "msg_x"}'
    assert message.message_id == "deliver:msg_x"
    assert message.headers["x-mailgw-reason"] == "cannot ever deliver this"
    assert message.headers["x-mailgw-queue"] == DELIVERY
    assert isinstance(message, aio_pika.abc.AbstractIncomingMessage)


async def test_publish_many_reports_each_message(publisher: Publisher) -> None:
    outcomes = await publish_many(publisher, DELIVERY, [
        Outgoing(DELIVER_KEY, b"{}", "batch-1"),
        Outgoing("no-such-key", b"{}", "batch-2"),  # mandatory: returned by the broker
        Outgoing(DELIVER_KEY, b"{}", "batch-3"),
    ])
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], UnroutableError)
    # Nothing of the batch is left registered on the channel once it is answered.
    channel = await publisher.channel.get_underlay_channel()
    assert not {"batch-1", "batch-2", "batch-3"} & set(channel.message_id_delivery_tag)


async def test_publish_many_fails_every_message_when_the_channel_closes(publisher: Publisher) -> None:
    # A missing exchange makes the broker close the channel: nothing is confirmed.
    outcomes = await publish_many(publisher, "no-such-exchange", [
        Outgoing(DELIVER_KEY, b"{}", "gone-1"), Outgoing(DELIVER_KEY, b"{}", "gone-2")])
    assert all(isinstance(o, PublishFailed) for o in outcomes)
    # The robust channel comes back and the next batch goes through.
    for _ in range(100):
        if (await publish_many(publisher, DELIVERY, [Outgoing(DELIVER_KEY, b"{}", "after")]))[0] is None:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("publishing never recovered after the channel closed")
