"""Test data for delivery: messages and deliver tasks written as the router would (contracts.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from gateway import outbox
from gateway.bus.publisher import Publisher
from gateway.bus.topology import DELIVER_KEY, DELIVERY, EVENTS, Topology
from gateway.crypto import Vault
from gateway.ids import new_id
from gateway.mail.threading import new_message_id
from tests.support import factories


@dataclass
class World:
    workspace_id: str
    mailbox_id: str
    identity_id: str
    handle: str
    email: str


async def world(
    pool: asyncpg.Pool,
    vault: Vault,
    *,
    port: int,
    email: str = "alice@example.test",
    from_name: str | None = "Alice Chen",
    username: str | None = None,
    password: str = "secret",
) -> World:
    t = await factories.tenant(pool)
    mbx = await factories.mailbox(pool, vault, t.workspace_id, email, smtp_port=port,
                                  username=username, password=password, from_name=from_name)
    handle = "alice.acme@example.com"
    idn = await factories.identity(pool, t.workspace_id, handle, [mbx], display_name="Alice (identity)")
    return World(t.workspace_id, mbx, idn, handle, email)


@dataclass
class Staged:
    id: str
    rfc_message_id: str
    conversation_id: str
    outbox_id: int


async def stage_message(
    pool: asyncpg.Pool,
    publisher: Publisher | None,
    w: World,
    *,
    to: str = "bob@example.test",
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    subject: str = "Hello there",
    text: str | None = "Hi Bob,\n\nhow are you?",
    html: str | None = None,
    from_name: str | None = "Alice Chen",
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    headers: dict[str, str] | None = None,
    unsubscribe: bool = False,
    metadata: dict[str, Any] | None = None,
    job_id: str | None = None,
    scheduled_reply_id: str | None = None,
    conversation_id: str | None = None,
) -> Staged:
    """Conversation + queued message + deliver task in one transaction; published unless no publisher."""
    msg_id = new_id("msg")
    rfc = new_message_id(w.email)
    async with pool.acquire() as conn, conn.transaction():
        if conversation_id is None:
            conversation_id = new_id("conv")
            await conn.execute(
                "INSERT INTO conversations (id, workspace_id, identity_id, mailbox_id, lead_id,"
                " lead_email, subject, last_activity_at) VALUES ($1, $2, $3, $4, $5, $6, $7,"
                " now() - interval '1 day')",
                conversation_id, w.workspace_id, w.identity_id, w.mailbox_id, new_id("lead"), to, subject,
            )
        await conn.execute(
            "INSERT INTO messages (id, conversation_id, workspace_id, mailbox_id, type, direction,"
            " rfc_message_id, in_reply_to, \"references\", from_email, from_name, to_emails, cc_emails,"
            " bcc_emails, subject, text_body, html_body, headers, unsubscribe, metadata, job_id,"
            " scheduled_reply_id, status)"
            " VALUES ($1, $2, $3, $4, 'sent', 'outbound', $5, $6, $7, $8, $9, $10, $11, $12, $13,"
            " $14, $15, $16, $17, $18, $19, $20, 'queued')",
            msg_id, conversation_id, w.workspace_id, w.mailbox_id, rfc, in_reply_to, list(references),
            w.email, from_name, [to], list(cc), list(bcc), subject, text, html, headers or {},
            unsubscribe, metadata or {}, job_id, scheduled_reply_id,
        )
        oid = await outbox.stage(conn, DELIVERY, DELIVER_KEY, orjson.dumps({"messageId": msg_id}),
                                 message_id=f"deliver:{msg_id}")
    if publisher is not None:
        await outbox.publish_rows(pool, publisher, [oid])
    return Staged(msg_id, rfc, conversation_id, oid)


async def message_row(pool: asyncpg.Pool, msg_id: str) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM messages WHERE id = $1", msg_id)
    assert row is not None
    return row


async def wait_status(
    pool: asyncpg.Pool, msg_id: str, statuses: Sequence[str], timeout: float = 15.0  # noqa: ASYNC109
) -> asyncpg.Record:
    """Poll the row until its status is one of `statuses` (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        row = await message_row(pool, msg_id)
        if row["status"] in statuses:
            return row
        if loop.time() > deadline:
            raise TimeoutError(f"{msg_id} still {row['status']!r} after {timeout}s")
        await asyncio.sleep(0.05)


class EventTap:
    """A private queue bound to the test's events exchange: collects every event published."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    async def start(self, amqp: AbstractRobustConnection, topology: Topology) -> None:
        self._channel = await amqp.channel()
        queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(topology.name(EVENTS), routing_key="#")
        await queue.consume(self._on_message)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        async with message.process():
            self.events.append(orjson.loads(message.body))
            self._changed.set()

    async def stop(self) -> None:
        await self._channel.close()

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == event_type]

    async def wait(self, event_type: str, count: int = 1, timeout: float = 15.0) -> list[dict[str, Any]]:  # noqa: ASYNC109
        try:
            async with asyncio.timeout(timeout):
                while len(self.of(event_type)) < count:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"{len(self.of(event_type))}/{count} {event_type} events;"
                f" saw {[e['type'] for e in self.events]}"
            ) from None
        return self.of(event_type)
