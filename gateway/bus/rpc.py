"""Request/response over AMQP: the API's RPC client (direct reply-to) and the router's answers.

The client consumes RabbitMQ's `amq.rabbitmq.reply-to` pseudo-queue on its own channel and
publishes requests on that same channel, so there is no reply queue to declare or clean up.
Each call has a correlation id and a deadline; no answer in time is `RpcTimeout` (the API
turns it into 503 + Retry-After).

Neither requests nor answers use publisher confirms, on purpose: what makes a send durable
is the router's PostgreSQL commit, which precedes its answer. A request the broker loses is
never answered (503, nothing was accepted; a retry with the same key is safe), and a lost
answer is recovered by that retry as a replay. Confirms cost aio-pika about a third of the
CPU per command (measured with bench/send.py), so they are kept where they guard state:
deliver tasks and events (`Publisher`).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiormq
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from aiormq.abc import ChannelFrame, FrameType
from pamqp.header import ContentHeader

from gateway.bus.topology import Topology
from gateway.errors import ServiceUnavailable
from gateway.keys import KeyCheck
from gateway.logging import get_logger

log = get_logger(__name__)

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
STATUS_HEADER = "status"
REPLAYED_HEADER = "x-mailgw-replayed"
DEADLINE_HEADER = "x-mailgw-deadline"  # epoch ms after which the caller no longer waits
ORIGIN_HEADER = "x-mailgw-origin"  # "api" for commands the HTTP API publishes
KEY_HEADER = "x-mailgw-key-check"  # an API key the consumer must check (`keys.KeyCheck.encode`)


class RpcTimeout(ServiceUnavailable):
    default_message = "The router did not answer in time; retry with the same Idempotency-Key"


@dataclass(frozen=True)
class RpcReply:
    status: int
    body: bytes
    headers: dict[str, Any]


class RpcClient:
    """One per API process: many concurrent calls share one channel and one reply consumer."""

    def __init__(self, channel: AbstractChannel, topology: Topology) -> None:
        self.channel = channel
        self.topology = topology
        self._pending: dict[str, asyncio.Future[RpcReply]] = {}
        self._tag: str | None = None

    @classmethod
    async def open(cls, amqp: AbstractRobustConnection, topology: Topology) -> RpcClient:
        channel = await amqp.channel(publisher_confirms=False)
        client = cls(channel, topology)
        queue = await channel.get_queue(DIRECT_REPLY_TO, ensure=False)
        client._tag = await queue.consume(client._on_reply, no_ack=True)
        return client

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.pop(message.correlation_id or "", None)
        if future is None or future.done():
            log.info("rpc_late_reply", correlation_id=message.correlation_id)
            return
        headers = dict(message.headers or {})
        status = headers.get(STATUS_HEADER, 500)
        future.set_result(RpcReply(int(status) if isinstance(status, int) else 500, message.body, headers))

    async def call(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        wait: float,
        message_id: str | None = None,
        headers: dict[str, Any] | None = None,
    ) -> RpcReply:
        """Publish (persistent) and wait for the answer; `RpcTimeout` after `wait` seconds."""
        loop = asyncio.get_running_loop()
        correlation_id = secrets.token_hex(16)
        future: asyncio.Future[RpcReply] = loop.create_future()
        self._pending[correlation_id] = future
        hdrs = dict(headers or {})
        hdrs[DEADLINE_HEADER] = int((time.time() + wait) * 1000)
        properties = aiormq.spec.Basic.Properties(
            message_id=message_id, headers=hdrs, reply_to=DIRECT_REPLY_TO,
            correlation_id=correlation_id, content_type="application/json", delivery_mode=2,
        )
        queued = False
        try:
            # One asyncio.timeout for the publish and the answer (not wait_for: no extra task
            # per call on this hot path).
            async with asyncio.timeout_at(loop.time() + wait):
                await _publish_unconfirmed(self.channel, self.topology.name(exchange), routing_key,
                                           body, properties, mandatory=True)
                queued = True
                return await future
        except TimeoutError:
            if queued:
                raise RpcTimeout() from None
            raise RpcTimeout("The command could not be queued; retry later") from None
        except aiormq.exceptions.AMQPError as exc:
            raise RpcTimeout("The command could not be queued; retry later") from exc
        finally:
            self._pending.pop(correlation_id, None)

    async def close(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.cancel()
        await self.channel.close()


class Responder:
    """The consumer side: answers `reply_to` on the default exchange (unprefixed names)."""

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel

    @classmethod
    async def open(cls, amqp: AbstractRobustConnection) -> Responder:
        return cls(await amqp.channel(publisher_confirms=False))

    async def answer(
        self, request: AbstractIncomingMessage, status: int, body: Any, *, replayed: bool = False
    ) -> None:
        """No-op without `reply_to`; otherwise JSON body, integer header `status`, same correlation id."""
        if not request.reply_to:
            return
        headers: dict[str, Any] = {STATUS_HEADER: status}
        if replayed:
            headers[REPLAYED_HEADER] = True
        payload = body if isinstance(body, bytes) else orjson.dumps(body)
        properties = aiormq.spec.Basic.Properties(
            headers=headers, correlation_id=request.correlation_id,
            content_type="application/json", delivery_mode=1,
        )
        # Not mandatory: nobody could act on a returned answer (its caller is gone), and
        # RabbitMQ 3.10 returns every mandatory publish to direct reply-to even as it delivers
        # it, which cost the router a whole message back (and an error log line) per answer.
        await _publish_unconfirmed(self.channel, "", request.reply_to, payload, properties,
                                   mandatory=False)

    async def close(self) -> None:
        await self.channel.close()


async def _publish_unconfirmed(
    channel: AbstractChannel, exchange: str, routing_key: str, body: bytes,
    properties: aiormq.spec.Basic.Properties, *, mandatory: bool,
) -> None:
    """Queue a publish on a channel without confirms and return without waiting for its write.

    aio-pika's `Exchange.publish` waits for each frame's write while holding the channel's
    lock, so concurrent calls on one channel went out one loop turn apiece; and aiormq writes
    every queued publish with its own `send()` (on loopback each also runs the receiver's TCP
    stack). So the publishes queued on one channel in one loop turn are marshalled into ONE
    write at the end of the turn (`_flush_unconfirmed`): the API's concurrent requests and the
    router's answers to one batch each cost one `send()`. Nothing is lost by not waiting: a
    write that fails closes the channel, and the caller's deadline (RPC) or the caller's retry
    (answers are recovered as replays) covers it, as before. The frames are the ones aiormq's
    `basic_publish` builds (its `_split_body`, and a random Message-ID when none is set), on a
    channel without confirms, so no delivery tag is involved (aiormq's minor version is pinned).
    """
    underlay = await channel.get_underlay_channel()
    if not isinstance(underlay, aiormq.Channel) or underlay.publisher_confirms:
        raise TypeError("unconfirmed publishes need an aiormq channel without confirms")
    if underlay.is_closed:
        raise aiormq.exceptions.ChannelInvalidStateError("the channel is closed")
    if not properties.message_id:
        properties.message_id = uuid.UUID(int=random.getrandbits(128), version=4).hex
    frames = _unconfirmed.get(underlay)
    if frames is None:
        frames = _unconfirmed[underlay] = []
        asyncio.get_running_loop().call_soon(_flush_unconfirmed, underlay)
    frames.append(aiormq.spec.Basic.Publish(exchange=exchange, routing_key=routing_key,
                                            mandatory=mandatory))
    frames.append(ContentHeader(properties=properties, body_size=len(body)))
    frames.extend(underlay._split_body(body))


# Frames queued per channel in the current loop turn (see `_publish_unconfirmed`).
_unconfirmed: dict[aiormq.Channel, list[FrameType]] = {}


def _flush_unconfirmed(channel: aiormq.Channel) -> None:
    frames = _unconfirmed.pop(channel, None)
    if frames and not channel.is_closed:  # closed meanwhile: lost like an unwritten frame
        channel.write_queue.put_nowait(ChannelFrame.marshall(channel_number=channel.number,
                                                             frames=frames))


def expired(message: AbstractIncomingMessage) -> bool:
    """True when the publisher set a deadline that has passed (its caller got a 503)."""
    deadline = (message.headers or {}).get(DEADLINE_HEADER)
    return isinstance(deadline, int) and time.time() * 1000 > deadline


def key_check(message: AbstractIncomingMessage) -> KeyCheck | None:
    """The API key an HTTP command asks its consumer to check (`KEY_HEADER`), if any."""
    value = (message.headers or {}).get(KEY_HEADER)
    if value is None:
        return None
    return KeyCheck.decode(value.decode() if isinstance(value, bytes) else str(value))
