"""Ingestion against PostgreSQL (no IMAP): threading, replies, auto-replies, bounces, bad mail."""

from __future__ import annotations

import secrets

import asyncpg
import pytest

from gateway.config import Settings
from gateway.crypto import Vault
from gateway.inbound.classify import Fetched
from gateway.inbound.ingest import BatchResult, Ingestor, MailboxRef
from gateway.storage import DirectoryStorage
from tests.integration.inbound.conftest import Lab, make_dsn, make_lab, make_mail

pytestmark = pytest.mark.integration


class Crash(Exception):
    pass


@pytest.fixture
async def lab(pool: asyncpg.Pool, vault: Vault) -> Lab:
    return await make_lab(pool, vault)


def ingestor(pool: asyncpg.Pool, settings: Settings, **kw: object) -> Ingestor:
    return Ingestor(pool, DirectoryStorage(settings.attachments_path), settings.public_url, **kw)  # type: ignore[arg-type]


async def feed(ing: Ingestor, lab: Lab, *raws: bytes, start: int = 1) -> BatchResult:
    items = [Fetched(start + i, raw) for i, raw in enumerate(raws)]
    ref = MailboxRef(lab.mailbox_id, lab.workspace_id, lab.mailbox_email)
    return await ing.ingest(ref, "INBOX", 7, items, start + len(raws) - 1)


async def test_reply_threads_by_in_reply_to(pool: asyncpg.Pool, settings: Settings, lab: Lab) -> None:
    raw = make_mail(sender=f"Bob <{lab.lead}>", to=lab.mailbox_email, in_reply_to=lab.sent_rfc_id,
                    attachment=("quote.pdf", b"%PDF-1.4 fake"))
    result = await feed(ingestor(pool, settings), lab, raw)
    assert result.outcomes == {"reply": 1}
    msg = await pool.fetchrow("SELECT * FROM messages WHERE direction = 'inbound'")
    assert msg["conversation_id"] == lab.conversation_id
    flags = (msg["type"], msg["is_from_lead"], msg["is_auto_reply"], msg["read"])
    assert flags == ("reply", True, False, False)
    assert msg["reply_text"] == "Sounds good."
    assert msg["metadata"] == {"campaign": "c1", "step": 1}
    conv = await pool.fetchrow("SELECT unread_count FROM conversations WHERE id = $1", lab.conversation_id)
    assert conv["unread_count"] == 1
    att = await pool.fetchrow("SELECT * FROM attachments WHERE message_id = $1", msg["id"])
    assert (att["filename"], att["size"], att["position"]) == ("quote.pdf", 13, 0)
    assert (settings.attachments_path / att["key"]).read_bytes() == b"%PDF-1.4 fake"
    event = await pool.fetchrow("SELECT * FROM events WHERE type = 'reply.received'")
    data = event["data"]
    assert data["conversationId"] == lab.conversation_id and data["messageId"] == msg["id"]
    assert data["replyText"] == "Sounds good." and data["isAutoReply"] is False
    assert data["metadata"] == {"campaign": "c1", "step": 1}
    assert data["from"] == lab.lead and data["identity"] == "alice.acme@example.com"
    assert data["attachments"][0]["downloadUrl"].endswith(f"/v1/inbox/{lab.conversation_id}/attachments/0")
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE routing_key = 'reply.received'") == 1
    cursor = await pool.fetchrow("SELECT uidvalidity, last_uid FROM imap_cursors")
    assert (cursor["uidvalidity"], cursor["last_uid"]) == (7, 1)


async def test_lead_address_fallback_and_unmatched_quarantine(
    pool: asyncpg.Pool, settings: Settings, lab: Lab
) -> None:
    by_lead = make_mail(sender=lab.lead.upper().replace("EXAMPLE.TEST", "Example.Test"),
                        to=lab.mailbox_email, subject="new thread")
    stranger = make_mail(sender="someone@else.example", to=lab.mailbox_email, subject="hi")
    result = await feed(ingestor(pool, settings), lab, by_lead, stranger)
    assert result.outcomes == {"reply": 1, "unmatched": 1}
    assert await pool.fetchval(
        "SELECT conversation_id FROM messages WHERE direction = 'inbound'") == lab.conversation_id
    q = await pool.fetchrow("SELECT * FROM inbound_quarantine")
    assert q["reason"] == "unmatched" and bytes(q["raw"]) == stranger and q["uid"] == 2


async def test_auto_reply_is_flagged_and_not_unread(pool: asyncpg.Pool, settings: Settings, lab: Lab) -> None:
    ooo = make_mail(sender=lab.lead, to=lab.mailbox_email, subject="Out of Office: Hello",
                    in_reply_to=lab.sent_rfc_id, headers={"Auto-Submitted": "auto-replied"})
    await feed(ingestor(pool, settings), lab, ooo)
    msg = await pool.fetchrow("SELECT is_auto_reply, read FROM messages WHERE direction = 'inbound'")
    assert (msg["is_auto_reply"], msg["read"]) == (True, True)
    assert await pool.fetchval("SELECT unread_count FROM conversations") == 0
    data = await pool.fetchval("SELECT data FROM events WHERE type = 'reply.received'")
    assert data["isAutoReply"] is True


async def test_hard_and_soft_bounces(pool: asyncpg.Pool, settings: Settings, lab: Lab) -> None:
    soft = make_dsn(reporter="mx.example.test", to=lab.mailbox_email, failed=lab.lead,
                    original_id=lab.sent_rfc_id, status="4.2.2")
    await feed(ingestor(pool, settings), lab, soft)
    assert await pool.fetchval("SELECT status FROM messages WHERE id = $1", lab.sent_message_id) == "sent"
    hard = make_dsn(reporter="mx.example.test", to=lab.mailbox_email, failed=lab.lead,
                    original_id=lab.sent_rfc_id)
    result = await feed(ingestor(pool, settings), lab, hard, start=2)
    assert result.outcomes == {"bounce": 1}
    assert await pool.fetchval("SELECT status FROM messages WHERE id = $1", lab.sent_message_id) == "bounced"
    assert await pool.fetchval("SELECT reason FROM suppressions WHERE email = $1", lab.lead) == "hard_bounce"
    assert await pool.fetchval("SELECT bounced_total FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
                               " WHERE m.id = $1", lab.sent_message_id) == 1
    rows = await pool.fetch("SELECT data FROM events WHERE type = 'email.bounced' ORDER BY created_at")
    kinds = [(r["data"]["bounceType"], r["data"]["status"]) for r in rows]
    assert kinds == [("soft", "4.2.2"), ("hard", "5.1.1")]
    assert rows[1]["data"]["messageId"] == lab.sent_message_id
    assert "Recipient address rejected" in rows[1]["data"]["diagnostic"]
    # A DSN is not a reply.
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE direction = 'inbound'") == 0


async def test_unparseable_is_quarantined_and_cursor_advances(
    pool: asyncpg.Pool, settings: Settings, lab: Lab
) -> None:
    result = await feed(ingestor(pool, settings), lab, b"", b"\x00\xff garbage without headers", start=5)
    assert result.outcomes == {"unparseable": 2}
    assert await pool.fetchval("SELECT last_uid FROM imap_cursors") == 6
    reasons = await pool.fetch("SELECT reason, rfc_message_id FROM inbound_quarantine ORDER BY uid")
    assert [r["reason"] for r in reasons] == ["unparseable", "unparseable"]
    assert all(r["rfc_message_id"].endswith("@mailgw.invalid>") for r in reasons)


async def test_exactly_once_across_crash_and_replay(pool: asyncpg.Pool, settings: Settings, lab: Lab) -> None:
    raws = [make_mail(sender=lab.lead, to=lab.mailbox_email, in_reply_to=lab.sent_rfc_id, body=f"n{i}")
            for i in range(5)]
    raws.append(b"Subject: no id\r\nFrom: x@y.example\r\n\r\nno message-id here")

    def crash(point: str) -> None:
        if point == "persisted":
            raise Crash(point)

    with pytest.raises(Crash):
        await feed(ingestor(pool, settings, fault=crash), lab, *raws)
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE direction = 'inbound'") == 0
    assert await pool.fetchval("SELECT count(*) FROM events") == 0
    first = await feed(ingestor(pool, settings), lab, *raws)
    assert first.outcomes == {"reply": 5, "unmatched": 1}
    # Resync (UIDVALIDITY change, or a crash after commit): the same mail under new UIDs.
    again = await feed(ingestor(pool, settings), lab, *raws, start=100)
    assert again.outcomes == {"duplicate": 6}
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE direction = 'inbound'") == 5
    assert await pool.fetchval("SELECT count(*) FROM events WHERE type = 'reply.received'") == 5
    assert await pool.fetchval("SELECT count(*) FROM inbound_quarantine") == 1
    assert await pool.fetchval("SELECT unread_count FROM conversations") == 5


async def test_own_outbound_copy_is_not_a_reply(pool: asyncpg.Pool, settings: Settings, lab: Lab) -> None:
    own = make_mail(sender=lab.mailbox_email, to=lab.lead, message_id=lab.sent_rfc_id, subject="Hello")
    result = await feed(ingestor(pool, settings), lab, own)
    assert result.outcomes == {"own": 1}
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE direction = 'inbound'") == 0


async def test_lease_fence_rolls_back(pool: asyncpg.Pool, settings: Settings, lab: Lab) -> None:
    from gateway.inbound.ingest import LeaseLost

    raw = make_mail(sender=lab.lead, to=lab.mailbox_email, in_reply_to=lab.sent_rfc_id)
    with pytest.raises(LeaseLost):
        await feed(ingestor(pool, settings, lease_owner=f"nobody-{secrets.token_hex(2)}"), lab, raw)
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE direction = 'inbound'") == 0


async def test_nul_characters_do_not_stall_the_mailbox(
    pool: asyncpg.Pool, settings: Settings, lab: Lab
) -> None:
    # U+0000 from a raw NUL byte, a quoted-printable "=00" and an encoded word: PostgreSQL text
    # and jsonb refuse it, so stored as is the batch would fail on every retry.
    raw = make_mail(sender=lab.lead, to=lab.mailbox_email, in_reply_to=lab.sent_rfc_id,
                    subject="Re: Hello", body="Yes\x00 please")
    qp = (f"From: {lab.lead}\r\nTo: {lab.mailbox_email}\r\nSubject: =?utf-8?q?Re=3A_a=00b?=\r\n"
          f"In-Reply-To: {lab.sent_rfc_id}\r\nMessage-ID: <nul-qp@lead.example>\r\n"
          "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n"
          "\r\nfine=00 thanks\r\n").encode()
    result = await feed(ingestor(pool, settings), lab, raw, qp)
    assert result.outcomes == {"reply": 2}
    rows = await pool.fetch(
        "SELECT subject, text_body FROM messages WHERE direction = 'inbound' ORDER BY subject")
    assert [(r["subject"], r["text_body"].strip()) for r in rows] == [("Re: Hello", "Yes please"),
                                                                   ("Re: ab", "fine thanks")]
    assert await pool.fetchval("SELECT count(*) FROM events WHERE type = 'reply.received'") == 2
