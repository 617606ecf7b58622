"""`rpc._publish_unconfirmed`: the publishes of one loop turn on one channel are one write."""

from __future__ import annotations

import asyncio
from typing import Any

import aiormq
from pamqp import frame as pframe
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from gateway.bus import rpc


class Wrapper:  # aio-pika's channel, as far as rpc uses it
    def __init__(self, underlay: aiormq.Channel) -> None:
        self.underlay = underlay

    async def get_underlay_channel(self) -> aiormq.Channel:
        return self.underlay


def channel(number: int) -> aiormq.Channel:
    ch: Any = object.__new__(aiormq.Channel)  # only what the publish path reads
    ch.number, ch.publisher_confirms, ch.max_content_size = number, False, 4
    ch.write_queue = asyncio.Queue()
    ch._closing = asyncio.get_running_loop().create_future()
    return ch  # type: ignore[no-any-return]


def frames(payload: bytes) -> list[tuple[int, object]]:
    out = []
    while payload:
        consumed, number, value = pframe.unmarshal(payload)
        out.append((number, value))
        payload = payload[consumed:]
    return out


def props(message_id: str | None) -> aiormq.spec.Basic.Properties:
    return aiormq.spec.Basic.Properties(message_id=message_id, correlation_id="c", delivery_mode=1)


async def test_one_write_per_channel_and_turn() -> None:
    one, two = channel(1), channel(2)
    await asyncio.gather(
        rpc._publish_unconfirmed(Wrapper(one), "ex", "a", b"0123456789", props("m1"),  # type: ignore[arg-type]
                                 mandatory=True),
        rpc._publish_unconfirmed(Wrapper(two), "", "b", b"x", props("m2"),  # type: ignore[arg-type]
                                 mandatory=False),
        rpc._publish_unconfirmed(Wrapper(one), "ex", "c", b"y", props(None),  # type: ignore[arg-type]
                                 mandatory=True),
    )
    await asyncio.sleep(0)  # the write is queued at the end of the turn
    assert one.write_queue.qsize() == 1 and two.write_queue.qsize() == 1
    written = frames(one.write_queue.get_nowait().payload)
    assert {n for n, _ in written} == {1}
    kinds = [type(v).__name__ for _, v in written]
    assert kinds == ["Publish", "ContentHeader", "ContentBody", "ContentBody", "ContentBody",
                     "Publish", "ContentHeader", "ContentBody"]
    first, second = written[0][1], written[5][1]
    assert isinstance(first, aiormq.spec.Basic.Publish) and first.routing_key == "a" and first.mandatory
    assert isinstance(second, aiormq.spec.Basic.Publish) and second.routing_key == "c"
    body = b"".join(v.value for _, v in written[2:5] if isinstance(v, ContentBody))
    assert body == b"0123456789"
    header = written[6][1]
    assert isinstance(header, ContentHeader) and header.properties.message_id  # one is made up
    assert [type(v).__name__ for _, v in frames(two.write_queue.get_nowait().payload)] == [
        "Publish", "ContentHeader", "ContentBody"]


async def test_a_channel_closed_before_the_write_gets_nothing() -> None:
    ch = channel(1)
    await rpc._publish_unconfirmed(Wrapper(ch), "", "a", b"x", props("m"),  # type: ignore[arg-type]
                                   mandatory=False)
    ch._closing.set_result(None)  # type: ignore[attr-defined]
    await asyncio.sleep(0)
    assert ch.write_queue.empty()
