"""Publish a committed batch's events in one write, their confirms awaited together.

Used by the poller (a batch of ingested replies) and delivery (the `email.sent` events of one
record statement). `Publisher.publish` sends one message per call: it takes the channel lock,
writes the message's three frames and waits for the connection's writer to drain them before
the next message may start — about 0.16 ms of CPU per message. A batch's events are known all
at once, so `publish_many` sends the same messages (same properties, same confirm-mode
channel, mandatory) as one frame sequence under the channel lock, registering each one as
aiormq's own `basic_publish` does (delivery tag, an entry for its confirm, Message-ID for
returns), then awaits the batch's confirms together. That uses aiormq channel internals (the minor version is
pinned in pyproject.toml), so it checks the channel is aiormq's and otherwise publishes one by
one with `Publisher.publish`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import aiormq
from aiormq import spec
from aiormq.abc import ChannelFrame
from pamqp import constants
from pamqp.frame import marshal
from pamqp.header import ContentHeader

from gateway.bus.frames import CONTENT_HEADER, FRAME_HEADER
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
        batch = await _write(channel, publisher.topology.name(exchange), messages)
    except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError,
            ConnectionError) as exc:  # e.g. the channel closed and is not back yet
        return [PublishFailed(str(exc) or type(exc).__name__) for _ in messages]
    # asyncio.wait never raises the batch future's error into this task (aiormq rejects it
    # when the channel closes); unanswered messages fail, late answers are ignored.
    await asyncio.wait({batch.finished}, timeout=publisher.timeout)
    finished, error = batch.finished, None
    if finished.done():
        error = PublishFailed("publish cancelled") if finished.cancelled() else finished.exception()
    batch.close(error)  # None: what is still unanswered timed out
    return [_outcome(o, exchange, m.routing_key) for o, m in zip(batch.outcomes, messages, strict=True)]


_PENDING = object()


class _Batch:
    """The confirms of one written batch.

    aiormq keeps a confirmation future per delivery tag and resolves it from the broker's
    acks, nacks and returns. Here each tag gets a `_Confirm` instead, which only records the
    outcome in the batch; one future per batch (aiormq's, so a closing channel rejects it)
    tells the publisher the batch is settled. That saves a future, its callbacks and their loop
    turns per message."""

    def __init__(self, channel: aiormq.Channel, size: int) -> None:
        self.channel = channel
        self.outcomes: list[object] = [_PENDING] * size
        self.left = size
        self.closed = False
        self.tags: list[tuple[str, int]] = []  # (Message-ID, delivery tag), for returns
        self.finished: asyncio.Future[None] = channel.create_future()

    def settle(self, index: int, outcome: object) -> None:
        if self.closed or self.outcomes[index] is not _PENDING:
            return
        self.outcomes[index] = outcome
        self.left -= 1
        if not self.left and not self.finished.done():
            self.finished.set_result(None)

    def close(self, error: BaseException | None) -> None:
        """No outcome changes from here on; what is still pending fails with `error`."""
        if self.closed:
            return
        self.closed = True
        failure = error or PublishFailed("the broker did not confirm the message in time")
        self.outcomes = [failure if o is _PENDING else o for o in self.outcomes]
        for message_id, tag in self.tags:  # as basic_publish does once a message is answered
            if self.channel.message_id_delivery_tag.get(message_id) == tag:
                self.channel.message_id_delivery_tag.pop(message_id)
        if not self.finished.done():
            self.finished.cancel()


class _Confirm:
    """What aiormq's channel sees for one delivery tag: the part of a future it uses."""

    __slots__ = ("batch", "index")

    def __init__(self, batch: _Batch, index: int) -> None:
        self.batch, self.index = batch, index

    def done(self) -> bool:
        return self.batch.closed or self.batch.outcomes[self.index] is not _PENDING

    def cancelled(self) -> bool:  # a late answer after a timeout is logged at debug level
        return self.batch.closed

    def set_result(self, result: object) -> None:
        self.batch.settle(self.index, result)

    def set_exception(self, exc: BaseException) -> None:
        self.batch.settle(self.index, exc)


# A content header frame for `properties(message_id)` (what pamqp marshals, pinned by
# tests/unit/bus/test_batch_publish.py): class Basic, weight 0, the body size, the flags of the
# properties that are set (content type, headers, delivery mode, priority, message id), then
# those properties in order. pamqp's generic encoder checks every property's type and cost
# ~8 µs per message; the frame is built directly for ASCII Message-IDs (ours always are).
_PROPERTY_FLAGS = 0xB880
_FRAME_END = bytes((constants.FRAME_END,))
_FIXED_PROPERTIES = (bytes((len(CONTENT_TYPE),)) + CONTENT_TYPE.encode()  # content type
                     + b"\x00\x00\x00\x00"  # headers: an empty table
                     + bytes((PERSISTENT, 0)))  # delivery mode, priority


def header_frame(channel_number: int, message_id: str, body_size: int) -> bytes:
    """The marshalled content header of a message published by `publish_many`."""
    if not message_id or not message_id.isascii() or len(message_id) > 255:
        return marshal(ContentHeader(properties=properties(message_id), body_size=body_size),
                       channel_number)
    start = CONTENT_HEADER.pack(spec.Basic.frame_id, 0, body_size, _PROPERTY_FLAGS)  # weight 0
    payload = b"".join((start, _FIXED_PROPERTIES, bytes((len(message_id),)), message_id.encode("ascii")))
    head = FRAME_HEADER.pack(constants.FRAME_HEADER, channel_number, len(payload))
    return b"".join((head, payload, _FRAME_END))


@functools.lru_cache(maxsize=256)
def _publish_frame(channel_number: int, exchange: str, routing_key: str) -> bytes:
    """The marshalled Basic.Publish frame: the same bytes for every message of a routing key."""
    return marshal(spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True),
                   channel_number)


async def _write(channel: aiormq.Channel, exchange: str, messages: Sequence[Outgoing]) -> _Batch:
    """Register and write every message under the channel lock (delivery tags follow the
    order of the frames on the wire)."""
    async with channel.lock:
        first = channel.delivery_tag
        batch = _Batch(channel, len(messages))
        frames: list[bytes] = []
        number = channel.number
        confirmations = cast(dict[int, Any], channel.confirmations)
        try:
            for index, m in enumerate(messages):
                channel.delivery_tag += 1
                tag = channel.delivery_tag
                confirmations[tag] = _Confirm(batch, index)
                channel.message_id_delivery_tag[m.message_id] = tag
                batch.tags.append((m.message_id, tag))
                frames.append(_publish_frame(number, exchange, m.routing_key))
                frames.append(header_frame(number, m.message_id, len(m.body)))
                frames.extend(marshal(part, number) for part in channel._split_body(m.body))
            # What ChannelFrame.marshall writes for these frames, without its per-frame checks.
            channel.write_queue.put_nowait(ChannelFrame(payload=b"".join(frames), should_close=False))
        except BaseException:
            # Nothing was written: give the delivery tags back, as basic_publish does.
            for tag in range(first + 1, channel.delivery_tag + 1):
                channel.confirmations.pop(tag, None)
            channel.delivery_tag = first
            batch.close(None)
            raise
    return batch


def _outcome(outcome: object, exchange: str, routing_key: str) -> BaseException | None:
    if isinstance(outcome, PublishFailed):
        return outcome
    if isinstance(outcome, aiormq.exceptions.PublishError):  # returned: mandatory and unroutable
        return UnroutableError(f"unroutable: {exchange}/{routing_key}")
    if isinstance(outcome, BaseException):
        return PublishFailed(str(outcome) or type(outcome).__name__)
    if not isinstance(outcome, spec.Basic.Ack):
        return PublishFailed(f"broker answered {type(outcome).__name__}")
    return None
