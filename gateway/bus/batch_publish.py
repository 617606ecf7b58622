"""Publish a committed batch's events in one write, their confirms awaited together.

Used by the poller (a batch of ingested replies) and delivery (the `email.sent` events of one
record statement). `Publisher.publish` sends one message per call: it takes the channel lock,
writes the message's three frames and waits for the connection's writer to drain them before
the next message may start — about 0.16 ms of CPU per message. A batch's events are known all
at once, so `publish_many` sends the same messages (same properties, same confirm-mode
channel, mandatory) as one frame sequence under the channel lock, registering each one as
aiormq's own `basic_publish` does (delivery tag, confirmation future, Message-ID for returns),
then awaits the confirms together. That uses aiormq channel internals (the minor version is
pinned in pyproject.toml), so it checks the channel is aiormq's and otherwise publishes one by
one with `Publisher.publish`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import aiormq
from aiormq import spec
from aiormq.abc import ChannelFrame
from pamqp.frame import marshal
from pamqp.header import ContentHeader

from gateway.bus.publisher import Publisher, PublishFailed, UnroutableError

CONTENT_TYPE = "application/json"
PERSISTENT = 2  # delivery mode


@dataclass(frozen=True)
class Outgoing:
    routing_key: str
    body: bytes
    message_id: str


def properties(message_id: str) -> spec.Basic.Properties:
    """What `Publisher.publish` sends for an event (persistent JSON, no headers)."""
    return spec.Basic.Properties(content_type=CONTENT_TYPE, delivery_mode=PERSISTENT, headers={},
                                 message_id=message_id, priority=0)  # aio_pika's default priority


async def publish_many(
    publisher: Publisher, exchange: str, messages: Sequence[Outgoing]
) -> list[BaseException | None]:
    """Publish to a logical exchange with confirms; per message None when the broker took it,
    else the error `Publisher.publish` would have raised (UnroutableError, PublishFailed)."""
    if not messages:
        return []
    channel = await publisher.channel.get_underlay_channel()
    if not isinstance(channel, aiormq.Channel) or not channel.publisher_confirms:
        return await asyncio.gather(
            *(publisher.publish(exchange, m.routing_key, m.body, message_id=m.message_id, headers={})
              for m in messages),
            return_exceptions=True,
        )
    try:
        futures = await _write(channel, publisher.topology.name(exchange), messages)
    except (aiormq.exceptions.AMQPError, ConnectionError) as exc:
        return [PublishFailed(str(exc) or type(exc).__name__) for _ in messages]
    _, pending = await asyncio.wait(futures, timeout=publisher.timeout)
    for future in pending:
        future.cancel()  # the broker's late answer is then ignored, as after a publish timeout
    return [_outcome(f, exchange, m.routing_key) for f, m in zip(futures, messages, strict=True)]


@functools.lru_cache(maxsize=256)
def _publish_frame(channel_number: int, exchange: str, routing_key: str) -> bytes:
    """The marshalled Basic.Publish frame: the same bytes for every message of a routing key."""
    return marshal(spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True),
                   channel_number)


def _forget(channel: aiormq.Channel, message_id: str, tag: int, _: object) -> None:
    # As basic_publish does: the Message-ID → tag entry (for returns) lives until the confirm.
    if channel.message_id_delivery_tag.get(message_id) == tag:
        channel.message_id_delivery_tag.pop(message_id)


async def _write(
    channel: aiormq.Channel, exchange: str, messages: Sequence[Outgoing]
) -> list[asyncio.Future[object]]:
    """Register and write every message under the channel lock (delivery tags follow the
    order of the frames on the wire); returns the confirmation futures in message order."""
    async with channel.lock:
        first = channel.delivery_tag
        futures: list[asyncio.Future[object]] = []
        frames: list[bytes] = []
        number = channel.number
        try:
            for m in messages:
                channel.delivery_tag += 1
                tag = channel.delivery_tag
                future: asyncio.Future[object] = channel.create_future()
                channel.confirmations[tag] = future
                channel.message_id_delivery_tag[m.message_id] = tag
                future.add_done_callback(partial(_forget, channel, m.message_id, tag))
                futures.append(future)
                frames.append(_publish_frame(number, exchange, m.routing_key))
                frames.append(marshal(ContentHeader(properties=properties(m.message_id),
                                                    body_size=len(m.body)), number))
                frames.extend(marshal(part, number) for part in channel._split_body(m.body))
            # What ChannelFrame.marshall writes for these frames, without its per-frame checks.
            channel.write_queue.put_nowait(ChannelFrame(payload=b"".join(frames), should_close=False))
        except BaseException:
            # Nothing was written: give the delivery tags back, as basic_publish does.
            for tag in range(first + 1, channel.delivery_tag + 1):
                channel.confirmations.pop(tag, None)
            channel.delivery_tag = first
            for future in futures:
                future.cancel()
            raise
    return futures


def _outcome(future: asyncio.Future[object], exchange: str, routing_key: str) -> BaseException | None:
    if future.cancelled():
        return PublishFailed("the broker did not confirm the message in time")
    exc = future.exception()
    if isinstance(exc, aiormq.exceptions.PublishError):  # returned: mandatory and unroutable
        return UnroutableError(f"unroutable: {exchange}/{routing_key}")
    if exc is not None:
        return PublishFailed(str(exc) or type(exc).__name__)
    if not isinstance(future.result(), spec.Basic.Ack):
        return PublishFailed(f"broker answered {type(future.result()).__name__}")
    return None
