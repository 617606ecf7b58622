"""The whole AMQP topology as data: exchanges, queues, bindings, dead-letter and delay queues.

The api and every consumer call `declare()`; re-declaring the same topology is harmless.
Names are logical (`mailgw.delivery`) and get `Settings.amqp_prefix` in front on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, ExchangeType

from gateway.bus import frames
from gateway.config import Settings

COMMANDS = "mailgw.commands"  # exchange and the router's queue
DELIVERY = "mailgw.delivery"  # exchange and the delivery workers' queue
EVENTS = "mailgw.events"  # topic exchange, routing key = event type
DEAD = "mailgw.dead"  # parked messages, with the reason in headers
DISPATCHER = "mailgw.dispatcher"  # the webhook dispatcher's queue on EVENTS

DELIVER_KEY = "deliver"
COMMAND_KEYS = ("send", "reply", "forward")


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: ExchangeType


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: dict[str, Any]
    bindings: tuple[tuple[str, str], ...] = field(default=())  # (exchange, routing key)


class Topology:
    """Built once from settings; knows every name and the arguments each queue needs."""

    def __init__(self, settings: Settings) -> None:
        self.prefix = settings.amqp_prefix
        self.smtp_delays = sorted(set(settings.smtp_retry_schedule))
        self.delivery_limit = settings.delivery_limit

    def name(self, logical: str) -> str:
        return f"{self.prefix}{logical}" if logical else ""

    def delay_queue(self, seconds: int) -> str:
        """Logical name of the delivery retry queue that holds a task for `seconds`."""
        return f"{DELIVERY}.retry.{seconds}s"

    def _work_args(self) -> dict[str, Any]:
        # Quorum queues: replicated, with a delivery limit so poison is parked in DEAD,
        # and at-least-once dead-lettering (needs reject-publish overflow) so parking loses nothing.
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": self.name(DEAD),
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    def exchanges(self) -> list[ExchangeSpec]:
        return [
            ExchangeSpec(COMMANDS, ExchangeType.DIRECT),
            ExchangeSpec(DELIVERY, ExchangeType.DIRECT),
            ExchangeSpec(EVENTS, ExchangeType.TOPIC),
            ExchangeSpec(DEAD, ExchangeType.FANOUT),
        ]

    def queues(self) -> list[QueueSpec]:
        specs = [
            QueueSpec(COMMANDS, self._work_args(), tuple((COMMANDS, k) for k in COMMAND_KEYS)),
            QueueSpec(DELIVERY, self._work_args(), ((DELIVERY, DELIVER_KEY),)),
            QueueSpec(DISPATCHER, self._work_args(), ((EVENTS, "#"),)),
            QueueSpec(DEAD, {"x-queue-type": "quorum"}, ((DEAD, ""),)),
        ]
        for seconds in self.smtp_delays:
            # A retry waits here, then dead-letters back onto the delivery exchange.
            specs.append(
                QueueSpec(
                    self.delay_queue(seconds),
                    {
                        "x-queue-type": "quorum",
                        "x-message-ttl": seconds * 1000,
                        "x-dead-letter-exchange": self.name(DELIVERY),
                        "x-dead-letter-routing-key": DELIVER_KEY,
                        "x-dead-letter-strategy": "at-least-once",
                        "x-overflow": "reject-publish",
                    },
                )
            )
        return specs

    async def declare(self, channel: AbstractChannel) -> None:
        for ex in self.exchanges():
            await channel.declare_exchange(self.name(ex.name), ex.type, durable=True)
        for q in self.queues():
            queue = await channel.declare_queue(self.name(q.name), durable=True, arguments=q.arguments)
            for exchange, key in q.bindings:
                await queue.bind(self.name(exchange), routing_key=key)

    async def delete(self, channel: AbstractChannel) -> None:
        """Remove everything `declare()` made (tests clean up their prefixed topology)."""
        for q in self.queues():
            await channel.queue_delete(self.name(q.name))
        for ex in self.exchanges():
            await channel.exchange_delete(self.name(ex.name))


async def connect(settings: Settings, name: str) -> aio_pika.abc.AbstractRobustConnection:
    """A robust connection, named so operators can tell roles apart in the broker; its frames
    are read in chunks (`gateway.bus.frames`)."""
    frames.install()
    return await aio_pika.connect_robust(
        settings.amqp_url, client_properties={"connection_name": f"mailgw-{name}"}
    )
