"""Reply, scheduled reply and forward end to end: API → outbox → delivery → Postfix → Dovecot (IMAP)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from consumers import delivery, scheduler
from consumers.runner import Context, close_context, open_context
from gateway.config import Settings
from gateway.ids import new_id
from gateway.mail.forward import FORWARD_MARKER
from gateway.timefmt import iso, now
from tests.integration.inbox.conftest import Setup, ago, conversation, fast, message, until
from tests.integration.inbox.test_attachments import upload
from tests.support.mailserver import ensure_lab, imap_fetch_by_message_id

pytestmark = pytest.mark.integration
Client = TestClient  # type: ignore[type-arg]


@pytest.fixture(scope="module", autouse=True)
def _lab() -> None:
    ensure_lab()


@contextlib.asynccontextmanager
async def roles(settings: Settings, *mains: Any) -> AsyncIterator[Context]:
    ctx = await open_context(fast(settings, outbox_grace=10.0), "inbox-loop")
    stop = asyncio.Event()
    tasks = [asyncio.create_task(main(ctx, stop)) for main in mains]
    try:
        yield ctx
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
        await close_context(ctx)


def _attachments(msg: EmailMessage) -> dict[str, bytes]:
    out = {}
    for part in msg.iter_attachments():
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        out[str(part.get_filename())] = payload
    return out


async def test_reply_reaches_the_lead_threaded_with_attachment(
    client: Client, pool: asyncpg.Pool, settings: Settings, setup: Setup
) -> None:
    conv = await conversation(pool, setup, subject="Hello Bob")
    await message(pool, setup, conv, type="sent", direction="outbound", at=ago(60), rfc="<root@loop.test>")
    await message(pool, setup, conv, type="reply", direction="inbound", at=ago(30), rfc="<lead@loop.test>",
                  in_reply_to="<root@loop.test>", references=["<root@loop.test>"])
    content = bytes(range(256)) * 64
    up = (await upload(client, setup, content, filename="quote.bin",
                       content_type="application/octet-stream"))["data"]

    async with roles(settings, delivery.run):
        rid = (await (await client.post(f"/v1/inbox/{conv}/reply", headers=setup.headers, json={
            "body": "<p>Hi Bob, the quote is attached.</p>", "cc": ["carol@example.test"],
            "attachments": [{"url": up["url"], "key": up["key"]}]})).json())["data"]["id"]
        msg_id = await until(pool, "SELECT message_id FROM scheduled_replies WHERE id = $1", rid)
        await until(pool, "SELECT id FROM messages WHERE id = $1 AND status = 'sent'", msg_id)
    rfc = await pool.fetchval("SELECT rfc_message_id FROM messages WHERE id = $1", msg_id)

    got = await imap_fetch_by_message_id("bob@example.test", rfc)
    assert got["Subject"] == "Re: Hello Bob"
    assert got["In-Reply-To"] == "<lead@loop.test>"
    assert got["References"].split() == ["<root@loop.test>", "<lead@loop.test>"]
    assert got["From"].addresses[0].addr_spec == "alice@example.test"
    assert got["From"].addresses[0].display_name == "Alice Chen"
    assert "carol@example.test" in str(got["Cc"])
    assert _attachments(got) == {"quote.bin": content}
    body = got.get_body(("plain",))
    assert body is not None and "the quote is attached" in body.get_content()
    assert await pool.fetchval("SELECT status FROM scheduled_replies WHERE id = $1", rid) == "sent"
    detail = (await (await client.get(f"/v1/inbox/{conv}", headers=setup.headers)).json())["data"]
    assert detail["messages"][-1]["status"] == "sent" and detail["messages"][-1]["sentAt"]
    assert detail["scheduledReplies"] == []


async def test_scheduled_reply_goes_out_through_the_scheduler(
    client: Client, pool: asyncpg.Pool, settings: Settings, setup: Setup
) -> None:
    conv = await conversation(pool, setup, subject="Later")
    when = iso(now() + timedelta(hours=1))
    resp = await client.post(f"/v1/inbox/{conv}/reply", headers=setup.headers,
                             json={"body": "Scheduled hello", "scheduledFor": when})
    rid = (await resp.json())["data"]["id"]
    async with roles(settings, delivery.run, scheduler.run):
        await pool.execute("UPDATE scheduled_replies SET scheduled_for = now() WHERE id = $1", rid)
        await until(pool, "SELECT 1 FROM scheduled_replies WHERE id = $1 AND status = 'sent'", rid)
    rfc = await pool.fetchval("SELECT rfc_message_id FROM messages WHERE scheduled_reply_id = $1", rid)
    got = await imap_fetch_by_message_id("bob@example.test", rfc)
    assert got["Subject"] == "Re: Later"
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE scheduled_reply_id = $1", rid) == 1


async def test_forward_reaches_recipients_with_chain_and_attachments(
    client: Client, pool: asyncpg.Pool, settings: Settings, setup: Setup
) -> None:
    conv = await conversation(pool, setup, subject="Contract")
    await message(pool, setup, conv, type="sent", direction="outbound", at=ago(120), subject="Contract",
                  text="Please find the draft.")
    reply = await message(pool, setup, conv, type="reply", direction="inbound", at=ago(60),
                          subject="Re: Contract", text="Signed copy attached.")
    signed = b"%PDF-1.7 signed" + bytes(range(256)) * 16
    key = f"inbox-attachments/{setup.ws}/{new_id('r')}/signed.pdf"
    (settings.attachments_path / key).parent.mkdir(parents=True, exist_ok=True)
    (settings.attachments_path / key).write_bytes(signed)
    await pool.execute(
        "INSERT INTO attachments (id, workspace_id, key, filename, content_type, size, message_id,"
        " conversation_id, position) VALUES ($1,$2,$3,'signed.pdf','application/pdf',$4,$5,$6,0)",
        new_id("att"), setup.ws, key, len(signed), reply, conv,
    )
    note = (await upload(client, setup, b"note bytes", filename="note.txt",
                         content_type="text/plain"))["data"]

    async with roles(settings, delivery.run):
        job = (await (await client.post(f"/v1/inbox/{conv}/forward", headers=setup.headers, json={
            "toEmails": ["carol@example.test", "bob@example.test"], "body": "<p>Team, FYI.</p>",
            "attachments": [{"url": note["url"], "key": note["key"]}]})).json())["data"]["jobId"]
        await until(pool, "SELECT 1 FROM jobs WHERE id = $1 AND status IN ('completed', 'failed')", job)
    data = (await (await client.get(f"/api/jobs/{job}", headers=setup.headers)).json())["data"]
    assert data["status"] == "completed", data
    rfc = await pool.fetchval("SELECT rfc_message_id FROM messages WHERE job_id = $1", job)
    assert data["result"]["messageId"] == rfc

    got = await imap_fetch_by_message_id("carol@example.test", rfc)
    assert got["Subject"] == "Fwd: Contract"
    assert got["In-Reply-To"] is None and got["References"] is None
    assert "bob@example.test" in str(got["Cc"]) and "carol@example.test" in str(got["To"])
    text = got.get_body(("plain",))
    assert text is not None
    plain = text.get_content()
    assert plain.startswith("Team, FYI.") and plain.count(FORWARD_MARKER) == 2
    assert "Please find the draft." in plain and "Signed copy attached." in plain
    assert "Subject: Re: Contract" in plain
    assert _attachments(got) == {"note.txt": b"note bytes", "signed.pdf": signed}
    # The lead in Cc got the same message.
    assert (await imap_fetch_by_message_id("bob@example.test", rfc))["Subject"] == "Fwd: Contract"
