"""Publishing with confirms: persistent, mandatory, and an exception for unroutable messages."""

from __future__ import annotations

from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from gateway.bus.topology import Topology
from gateway.errors import TransientError


class UnroutableError(TransientError):
    """The broker returned the message: no queue is bound for it (topology missing?)."""

    default_message = "The message could not be routed to any queue"


class PublishFailed(TransientError):
    default_message = "The broker did not confirm the message"


class Publisher:
    """One confirm-mode channel; `publish` returns only once the broker has taken the message."""

    def __init__(self, channel: AbstractChannel, topology: Topology, timeout: float = 10.0) -> None:
        self.channel = channel
        self.topology = topology
        self.timeout = timeout
        self._exchanges: dict[str, AbstractExchange] = {}

    @classmethod
    async def open(cls, connection: AbstractConnection, topology: Topology) -> Publisher:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        return cls(channel, topology)

    async def _exchange(self, logical: str) -> AbstractExchange:
        ex = self._exchanges.get(logical)
        if ex is None:
            if logical == "":
                ex = self.channel.default_exchange
            else:
                ex = await self.channel.get_exchange(self.topology.name(logical), ensure=False)
            self._exchanges[logical] = ex
        return ex

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        message_id: str | None = None,
        headers: dict[str, Any] | None = None,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        content_type: str = "application/json",
        persistent: bool = True,
    ) -> None:
        """Publish to a logical exchange ("" = default exchange, key = logical queue name)."""
        if exchange == "":
            routing_key = self.topology.name(routing_key)
        message = aio_pika.Message(
            body,
            message_id=message_id,
            headers=headers or {},
            reply_to=reply_to,
            correlation_id=correlation_id,
            content_type=content_type,
            delivery_mode=(
                aio_pika.DeliveryMode.PERSISTENT if persistent else aio_pika.DeliveryMode.NOT_PERSISTENT
            ),
        )
        ex = await self._exchange(exchange)
        try:
            confirmation = await ex.publish(
                message, routing_key, mandatory=True, timeout=self.timeout
            )
        except aio_pika.exceptions.DeliveryError as exc:
            raise UnroutableError(f"unroutable: {exchange or 'default'}/{routing_key}") from exc
        except (TimeoutError, aiormq.exceptions.AMQPError) as exc:
            raise PublishFailed(str(exc) or type(exc).__name__) from exc
        if not isinstance(confirmation, aiormq.spec.Basic.Ack):
            raise PublishFailed(f"broker answered {type(confirmation).__name__}")

    async def close(self) -> None:
        await self.channel.close()
