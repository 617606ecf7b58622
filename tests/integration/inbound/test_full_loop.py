"""Full loop on the mail lab: alice's sent mail → bob replies over SMTP (Postfix → Dovecot) →
the poller threads it → the inbox API shows it unread → `reply.received` on mailgw.events.
Also an out-of-office answer and a DSN for the same message."""

from __future__ import annotations

import asyncio
import secrets
from email.message import EmailMessage
from email.utils import format_datetime

import aio_pika
import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from consumers.poller import run as run_poller
from consumers.runner import close_context, open_context
from gateway.config import Settings
from gateway.crypto import Vault
from gateway.db import inbound_leases as leasedb
from gateway.inbound.session import ImapSession
from gateway.timefmt import now
from tests.integration.inbound.conftest import Appender, make_dsn, make_lab, wait_for
from tests.support.mailserver import imap_fetch_by_message_id, smtp_send
from tests.support.services import AMQP_URL

pytestmark = pytest.mark.integration
ALICE, BOB = "alice@example.test", "bob@example.test"


def _mail(sender: str, to: str, subject: str, body: str, in_reply_to: str | None = None,
          **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Date"] = format_datetime(now())
    msg["Message-ID"] = f"<{secrets.token_hex(10)}@example.test>"
    if in_reply_to:
        msg["In-Reply-To"] = msg["References"] = in_reply_to
    for k, v in headers.items():
        msg[k.replace("_", "-")] = v
    msg.set_content(body)
    return msg


async def test_reply_ooo_and_bounce_through_the_lab(
    pool: asyncpg.Pool, settings: Settings, vault: Vault, mail_lab: None, append: Appender,
    client: TestClient,  # type: ignore[type-arg]
) -> None:
    lab = await make_lab(pool, vault, user=ALICE, lead=BOB)
    # Start watching alice's INBOX from now on (other tests' mail there is not ours).
    session = await ImapSession.open("127.0.0.1", 1143, "none", ALICE, "secret")
    try:
        state = await session.select("INBOX")
        last = max(0, (state.uidnext or 1) - 1)
        await leasedb.set_cursor(pool, lab.mailbox_id, "INBOX", state.uidvalidity, last)
    finally:
        await session.close()

    # The "sent" message really travels alice → bob, with the Message-ID recorded for it.
    original = _mail(ALICE, BOB, "Hello", "Hello Bob")
    del original["Message-ID"]
    original["Message-ID"] = lab.sent_rfc_id
    await smtp_send(ALICE, BOB, original)
    await imap_fetch_by_message_id(BOB, lab.sent_rfc_id)

    conn = await aio_pika.connect(AMQP_URL)
    poll_settings = settings.model_copy(update={"poll_interval": 2.0, "lease_seconds": 5.0})
    ctx = await open_context(poll_settings, "test-full-loop")
    stop = asyncio.Event()
    task = asyncio.create_task(run_poller(ctx, stop))
    try:
        channel = await conn.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(f"{settings.amqp_prefix}mailgw.events", routing_key="#")

        reply = _mail(BOB, ALICE, "Re: Hello", "Yes, let's talk.\n\nOn Mon, Alice wrote:\n> Hello Bob",
                      in_reply_to=lab.sent_rfc_id)
        await smtp_send(BOB, ALICE, reply)
        ooo = _mail(BOB, ALICE, "Automatic reply: Hello", "I am out of the office.",
                    in_reply_to=lab.sent_rfc_id, Auto_Submitted="auto-replied")
        await smtp_send(BOB, ALICE, ooo)
        await append("INBOX", make_dsn(reporter="example.test", to=ALICE, failed=BOB,
                                       original_id=lab.sent_rfc_id), user=ALICE)

        async def seen() -> bool:
            n = await pool.fetchval("SELECT count(*) FROM inbound_seen WHERE mailbox_id = $1", lab.mailbox_id)
            return bool(n >= 3)

        await wait_for(seen, timeout=30)

        response = await client.get(f"/v1/inbox/{lab.conversation_id}",
                                    headers={"X-Api-Key": await _key(pool, lab.workspace_id)})
        assert response.status == 200, await response.text()
        body = (await response.json())["data"]
        assert body["unreadCount"] == 1 and body["isRead"] is False
        replies = [m for m in body["messages"] if m["type"] == "reply"]
        by_id = {m["messageId"]: m for m in replies}
        human, auto = by_id[str(reply["Message-ID"])], by_id[str(ooo["Message-ID"])]
        assert human["isFromLead"] and not human["isAutoReply"] and human["read"] is False
        assert human["content"].startswith("Yes, let's talk.")
        assert auto["isAutoReply"] is True
        sent = next(m for m in body["messages"] if m["type"] == "sent")
        assert sent["status"] == "bounced"

        got: dict[str, dict[str, object]] = {}
        async with queue.iterator(timeout=20) as it:
            async for message in it:
                async with message.process():
                    event = orjson.loads(message.body)
                    got.setdefault(f"{event['type']}:{event['data'].get('isAutoReply')}", event)
                if {"reply.received:False", "reply.received:True", "email.bounced:None"} <= set(got):
                    break
        human_event = got["reply.received:False"]["data"]
        assert isinstance(human_event, dict)
        assert human_event["conversationId"] == lab.conversation_id
        assert human_event["replyText"] == "Yes, let's talk."
        bounced = got["email.bounced:None"]["data"]
        assert isinstance(bounced, dict) and bounced["bounceType"] == "hard" and bounced["status"] == "5.1.1"
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)
        await close_context(ctx)
        await conn.close()


async def _key(pool: asyncpg.Pool, workspace_id: str) -> str:
    from gateway.db import workspaces as wsdb

    operator = await pool.fetchval("SELECT operator_id FROM workspaces WHERE id = $1", workspace_id)
    key, _ = await wsdb.insert_key(pool, kind="workspace", operator_id=operator, workspace_id=workspace_id,
                                   name="loop")
    return key
