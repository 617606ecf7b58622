"""Inbox fixtures: a tenant with a mailbox and identity, and conversations built straight in SQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aio_pika
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from consumers.runner import Context, close_context, open_context
from gateway.api.app import create_app
from gateway.bus.topology import Topology
from gateway.config import Settings
from gateway.crypto import Vault
from gateway.ids import new_id
from gateway.timefmt import now
from tests.support import factories
from tests.support.services import AMQP_URL


@dataclass
class Setup:
    tenant: factories.Tenant
    mailbox_id: str
    mailbox_email: str
    identity_id: str
    handle: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return self.tenant.headers

    @property
    def ws(self) -> str:
        return self.tenant.workspace_id


async def make_setup(pool: asyncpg.Pool, settings: Settings, name: str = "Acme",
                     mailbox_email: str = "alice@example.test") -> Setup:
    t = await factories.tenant(pool, name)
    vault = Vault(settings.secret_keys())
    mbx = await factories.mailbox(pool, vault, t.workspace_id, mailbox_email, from_name="Alice Chen")
    handle = f"alice.{name.lower()}@example.com"
    idn = await factories.identity(pool, t.workspace_id, handle, [mbx], display_name="Alice")
    return Setup(t, mbx, mailbox_email, idn, handle)


@pytest.fixture
async def setup(pool: asyncpg.Pool, settings: Settings) -> Setup:
    return await make_setup(pool, settings)


@pytest.fixture
async def other(pool: asyncpg.Pool, settings: Settings) -> Setup:
    return await make_setup(pool, settings, "Other", "carol@example.test")


async def conversation(
    pool: asyncpg.Pool, s: Setup, *, lead_email: str = "bob@example.test", subject: str = "Hello Bob",
    first: str = "Bob", last: str = "Builder", campaign: tuple[str, str] | None = ("cmp_1", "Spring"),
    activity: datetime | None = None, ai_tag: str | None = None, tags: list[str] | None = None,
    status: str = "active",
) -> str:
    conv_id = new_id("conv")
    await pool.execute(
        "INSERT INTO conversations (id, workspace_id, identity_id, mailbox_id, lead_id, lead_email, lead,"
        " campaign_id, campaign_name, subject, last_activity_at, ai_tag, tags, status)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)",
        conv_id, s.ws, s.identity_id, s.mailbox_id, new_id("lead"), lead_email,
        {"firstName": first, "lastName": last, "companyName": "Builders", "jobTitle": "CEO"},
        campaign[0] if campaign else None, campaign[1] if campaign else None, subject,
        activity or now(), ai_tag, tags or [], status,
    )
    return conv_id


async def message(
    pool: asyncpg.Pool, s: Setup, conv_id: str, *, type: str, direction: str,
    at: datetime, rfc: str | None = None, subject: str = "Hello Bob", text: str = "hi",
    html: str | None = None, read: bool = True, status: str | None = None,
    in_reply_to: str | None = None, references: list[str] | None = None, error: str | None = None,
    lead_email: str = "bob@example.test",
) -> str:
    msg_id = new_id("msg")
    inbound = direction == "inbound"
    await pool.execute(
        'INSERT INTO messages (id, conversation_id, workspace_id, mailbox_id, type, direction,'
        ' rfc_message_id, in_reply_to, "references", from_email, from_name, to_emails, subject,'
        " text_body, html_body, status, error, sent_at, received_at, is_from_lead, read, created_at,"
        " sequence_step)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,$23)",
        msg_id, conv_id, s.ws, s.mailbox_id, type, direction,
        rfc or f"<{new_id('r')}@example.test>", in_reply_to, references or [],
        lead_email if inbound else s.mailbox_email, "Bob Builder" if inbound else "Alice Chen",
        [s.mailbox_email] if inbound else [lead_email], subject, text, html,
        None if inbound else (status or "sent"), error,
        None if inbound or status not in (None, "sent") else at, at if inbound else None,
        inbound, read if inbound else True, at, 1 if type == "sent" else None,
    )
    return msg_id


def ago(seconds: float) -> datetime:
    return now() - timedelta(seconds=seconds)


@pytest.fixture
async def role_ctx(settings: Settings) -> AsyncIterator[Context]:
    """A consumer context (pool, broker, publisher) like a role process gets."""
    ctx = await open_context(settings, "inbox-test")
    try:
        yield ctx
    finally:
        await close_context(ctx)


async def drain(settings: Settings, logical_queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take every message waiting on a (prefixed) queue; bounded by what is there now."""
    conn = await aio_pika.connect(AMQP_URL)
    out = []
    try:
        channel = await conn.channel()
        queue = await channel.get_queue(Topology(settings).name(logical_queue), ensure=False)
        for _ in range(10_000):
            msg = await queue.get(no_ack=True, fail=False)
            if msg is None:
                break
            out.append(msg)
    finally:
        await conn.close()
    return out


async def until(pool: asyncpg.Pool, sql: str, *args: Any, within: float = 30.0) -> Any:
    """Poll `sql` until it returns a value that is neither NULL nor false; fail after `within` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (value := await pool.fetchval(sql, *args)) in (None, False):
        assert loop.time() < deadline, f"condition never held: {sql} {args}"
        await asyncio.sleep(0.05)
    return value


def fast(settings: Settings, **more: Any) -> Settings:
    """Settings for scheduler tests: relay unpublished rows at once, tick often."""
    return settings.model_copy(update={"outbox_grace": 0.0, "scheduler_interval": 0.1, **more})


@pytest.fixture
async def tiny_client(settings: Settings) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    """An API whose upload limit is 1 KiB."""
    server = TestServer(create_app(settings.model_copy(update={"max_attachment_bytes": 1024})))
    async with TestClient(server) as c:
        yield c
