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
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)

from gateway.bus.topology import Topology
from gateway.errors import ServiceUnavailable
from gateway.logging import get_logger

log = get_logger(__name__)

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
STATUS_HEADER = "status"
REPLAYED_HEADER = "x-mailgw-replayed"
DEADLINE_HEADER = "x-mailgw-deadline"  # epoch ms after which the caller no longer waits
ORIGIN_HEADER = "x-mailgw-origin"  # "api" for commands the HTTP API publishes


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
        self._exchanges: dict[str, AbstractExchange] = {}
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
        deadline = time.monotonic() + wait
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[RpcReply] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        hdrs = dict(headers or {})
        hdrs[DEADLINE_HEADER] = int((time.time() + wait) * 1000)
        message = aio_pika.Message(
            body, message_id=message_id, headers=hdrs, reply_to=DIRECT_REPLY_TO,
            correlation_id=correlation_id, content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            ex = self._exchanges.get(exchange)
            if ex is None:
                ex = await self.channel.get_exchange(self.topology.name(exchange), ensure=False)
                self._exchanges[exchange] = ex
            # asyncio.timeout, not wait_for: no extra task per await on this hot path
            try:
                async with asyncio.timeout_at(loop_deadline(deadline)):
                    await ex.publish(message, routing_key, mandatory=True)
            except (TimeoutError, aio_pika.exceptions.DeliveryError, aiormq.exceptions.AMQPError) as exc:
                raise RpcTimeout("The command could not be queued; retry later") from exc
            try:
                async with asyncio.timeout_at(loop_deadline(deadline)):
                    return await future
            except TimeoutError:
                raise RpcTimeout() from None
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
        await self.channel.default_exchange.publish(
            aio_pika.Message(
                payload, headers=headers, correlation_id=request.correlation_id,
                content_type="application/json", delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
            ),
            request.reply_to,
        )

    async def close(self) -> None:
        await self.channel.close()


def loop_deadline(monotonic_deadline: float) -> float:
    """A `time.monotonic()` deadline on the running loop's clock (for `asyncio.timeout_at`)."""
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_deadline - time.monotonic())


def expired(message: AbstractIncomingMessage) -> bool:
    """True when the publisher set a deadline that has passed (its caller got a 503)."""
    deadline = (message.headers or {}).get(DEADLINE_HEADER)
    return isinstance(deadline, int) and time.time() * 1000 > deadline
