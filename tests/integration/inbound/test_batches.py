"""Batched ingestion: several messages fetched from the lab's IMAP server in ONE batch.

Every test APPENDs its mail into a private folder of the lab mailbox, then runs
`watcher.ingest_uids` (real IMAP fetch + `Ingestor.commit`) so all of it lands in one
transaction, and checks what users see: messages, threads, attachments, events, outbox, cursor.
"""

from __future__ import annotations

import secrets
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import asyncpg
import orjson
import pytest

from gateway import events
from gateway.config import Settings
from gateway.db import inbound_leases as leasedb
from gateway.db import inbox as inboxdb
from gateway.ids import new_id
from gateway.inbound import ingest as ingest_mod
from gateway.inbound.ingest import Ingestor, MailboxRef
from gateway.inbound.session import ImapSession
from gateway.inbound.watcher import BATCH, ingest_uids
from gateway.storage import DirectoryStorage
from gateway.timefmt import iso, now
from tests.integration.inbound.conftest import Appender, Lab, make_dsn, make_mail

pytestmark = pytest.mark.integration

SHARED = ("conversationId", "identity", "mailbox", "messageId", "rfcMessageId", "to", "from", "subject",
          "metadata")


class Crash(Exception):
    pass


# --- helpers --------------------------------------------------------------------------------


def ingestor(pool: asyncpg.Pool, settings: Settings, **kw: Any) -> Ingestor:
    storage = kw.pop("storage", None) or DirectoryStorage(settings.attachments_path)
    return Ingestor(pool, storage, settings.public_url, **kw)


async def fetch_batch(ing: Ingestor, lab: Lab, above: int = 0) -> tuple[list[int], int]:
    """Fetch every UID above `above` in the lab folder and ingest them as ONE batch."""
    session = await ImapSession.open("127.0.0.1", 1143, "none", lab.mailbox_email, "secret")
    try:
        state = await session.select(lab.folder)
        uids = await session.uids_above(above)
        assert 0 < len(uids) <= BATCH  # one fetch, one transaction
        ref = MailboxRef(lab.mailbox_id, lab.workspace_id, lab.mailbox_email)
        last = await ingest_uids(session, ing, ref, lab.folder, state.uidvalidity, uids, batch=BATCH)
        return uids, last
    finally:
        await session.close()


def mail_with_files(*, sender: str, to: str, in_reply_to: str, files: list[tuple[str, bytes]],
                    body: str = "Files attached.") -> tuple[bytes, str]:
    """A reply with several attachments; returns (raw, Message-ID)."""
    msg = EmailMessage()
    rfc = f"<{secrets.token_hex(8)}@lead.example>"
    msg["From"], msg["To"], msg["Subject"] = sender, to, "Re: Hello"
    msg["Date"] = format_datetime(now())
    msg["Message-ID"] = rfc
    msg["In-Reply-To"] = msg["References"] = in_reply_to
    msg.set_content(body)
    for name, data in files:
        msg.add_attachment(data, maintype="application", subtype="pdf", filename=name)
    return bytes(msg), rfc


def rfc_id() -> str:
    return f"<{secrets.token_hex(8)}@lead.example>"


async def other_conversation(pool: asyncpg.Pool, lab: Lab, *, activity: str = "now()") -> tuple[str, str]:
    """A second conversation with the same lead (same identity and mailbox) holding one sent
    message; `activity` is its last_activity_at (SQL). Returns (conversation id, Message-ID)."""
    conv, msg = new_id("conv"), new_id("msg")
    rfc = f"<{secrets.token_hex(10)}@example.test>"
    await pool.execute(
        "INSERT INTO conversations (id, workspace_id, identity_id, mailbox_id, lead_id, lead_email,"
        f" subject, metadata, last_activity_at) VALUES ($1, $2, $3, $4, $5, $6, 'Other', $7, {activity})",
        conv, lab.workspace_id, lab.identity_id, lab.mailbox_id, new_id("lead"), lab.lead,
        {"campaign": "c2"},
    )
    await pool.execute(
        "INSERT INTO messages (id, conversation_id, workspace_id, mailbox_id, type, direction,"
        " rfc_message_id, from_email, to_emails, subject, text_body, status, sent_at, metadata, read)"
        " VALUES ($1, $2, $3, $4, 'sent', 'outbound', $5, $6, $7, 'Other', 'Hi', 'sent', now(), $8, true)",
        msg, conv, lab.workspace_id, lab.mailbox_id, rfc, lab.mailbox_email, [lab.lead],
        {"campaign": "c2", "step": 1},
    )
    return conv, rfc


async def inbound(pool: asyncpg.Pool) -> dict[str, asyncpg.Record]:
    """Inbound messages by Message-ID."""
    rows = await pool.fetch("SELECT * FROM messages WHERE direction = 'inbound'")
    return {r["rfc_message_id"]: r for r in rows}


async def reply_events(pool: asyncpg.Pool) -> dict[str, dict[str, Any]]:
    """reply.received data by inbound message id."""
    rows = await pool.fetch("SELECT data FROM events WHERE type = 'reply.received'")
    return {r["data"]["messageId"]: r["data"] for r in rows}


async def count(pool: asyncpg.Pool, sql: str, *args: Any) -> int:
    n: int = await pool.fetchval(sql, *args)
    return n


# --- (a) a Message-ID twice in one batch ----------------------------------------------------


async def test_same_message_id_twice_in_one_batch_is_stored_once(
    pool: asyncpg.Pool, settings: Settings, lab: Lab, append: Appender
) -> None:
    raw = make_mail(sender=lab.lead, to=lab.mailbox_email, in_reply_to=lab.sent_rfc_id)
    await append(lab.folder, raw, raw)
    uids, last = await fetch_batch(ingestor(pool, settings), lab)
    assert len(uids) == 2 and last == uids[-1]

    assert await count(pool, "SELECT count(*) FROM messages WHERE direction = 'inbound'") == 1
    assert await count(pool, "SELECT count(*) FROM events WHERE type = 'reply.received'") == 1
    assert await count(pool, "SELECT count(*) FROM outbox WHERE routing_key = 'reply.received'") == 1
    assert await count(pool, "SELECT count(*) FROM inbound_seen WHERE mailbox_id = $1", lab.mailbox_id) == 1
    assert await count(pool, "SELECT count(*) FROM inbound_quarantine") == 0
    assert await count(pool, "SELECT unread_count FROM conversations WHERE id = $1", lab.conversation_id) == 1
    cursor = await leasedb.get_cursor(pool, lab.mailbox_id, lab.folder)
    assert cursor is not None and cursor.last_uid == uids[-1]  # both UIDs are behind the cursor


# --- (b) threading onto a reply of the same batch -------------------------------------------


async def test_reply_threads_onto_an_earlier_reply_of_the_same_batch(
    pool: asyncpg.Pool, settings: Settings, lab: Lab, append: Appender
) -> None:
    # A more recently active conversation with the same lead: the lead-address fallback would
    # pick it, so only threading by Message-ID onto the batch's own reply lands in lab's.
    decoy, _ = await other_conversation(pool, lab, activity="now() + interval '1 day'")
    a_id, b_id, c_id = rfc_id(), rfc_id(), rfc_id()
    a = make_mail(sender=lab.lead, to=lab.mailbox_email, in_reply_to=lab.sent_rfc_id, message_id=a_id,
                  body="First answer.")
    b = make_mail(sender=lab.lead, to=lab.mailbox_email, in_reply_to=a_id, message_id=b_id,
                  body="And one more thing.")
    # A colleague of the lead (no conversation of their own) answering the lead's second mail.
    c = make_mail(sender="carol@example.test", to=lab.mailbox_email, in_reply_to=b_id, message_id=c_id,
                  body="Chiming in.", headers={"References": f"{a_id} {b_id}"})
    await append(lab.folder, a, b, c)
    await fetch_batch(ingestor(pool, settings), lab)

    got = await inbound(pool)
    assert set(got) == {a_id, b_id, c_id}
    assert {r["conversation_id"] for r in got.values()} == {lab.conversation_id}
    assert got[b_id]["in_reply_to"] == a_id and got[c_id]["in_reply_to"] == b_id
    assert [got[x]["is_from_lead"] for x in (a_id, b_id, c_id)] == [True, True, False]
    # Metadata is inherited along the chain from the sent message.
    assert all(r["metadata"] == {"campaign": "c1", "step": 1} for r in got.values())
    assert await count(pool, "SELECT unread_count FROM conversations WHERE id = $1", lab.conversation_id) == 2
    assert await count(pool, "SELECT count(*) FROM messages WHERE conversation_id = $1", decoy) == 1
    assert await count(pool, "SELECT count(*) FROM inbound_quarantine") == 0
    evs = await reply_events(pool)
    assert {d["conversationId"] for d in evs.values()} == {lab.conversation_id} and len(evs) == 3


# --- (c) attachments of several messages ----------------------------------------------------


async def _attachment_batch(
    pool: asyncpg.Pool, settings: Settings, lab: Lab, append: Appender
) -> tuple[str, dict[str, tuple[str, bytes]]]:
    """A1 (2 files) and B (1 file) into lab's conversation, X (1 file) into another one, all in
    one batch, interleaved. Returns (other conversation, filename → (conversation, bytes))."""
    other, other_rfc = await other_conversation(pool, lab)
    files = {
        "a-one.pdf": (lab.conversation_id, b"%PDF a1"),
        "a-two.pdf": (lab.conversation_id, b"%PDF a2 longer"),
        "x-one.pdf": (other, b"%PDF x1 in the other conversation"),
        "b-one.pdf": (lab.conversation_id, b"%PDF b1"),
    }
    a, _ = mail_with_files(sender=lab.lead, to=lab.mailbox_email, in_reply_to=lab.sent_rfc_id,
                           files=[("a-one.pdf", files["a-one.pdf"][1]), ("a-two.pdf", files["a-two.pdf"][1])])
    x, _ = mail_with_files(sender=lab.lead, to=lab.mailbox_email, in_reply_to=other_rfc,
                           files=[("x-one.pdf", files["x-one.pdf"][1])])
    b, _ = mail_with_files(sender=lab.lead, to=lab.mailbox_email, in_reply_to=lab.sent_rfc_id,
                           files=[("b-one.pdf", files["b-one.pdf"][1])])
    await append(lab.folder, a, x, b)
    await fetch_batch(ingestor(pool, settings), lab)
    return other, files


async def test_attachments_of_several_messages_get_their_positions_and_conversations(
    pool: asyncpg.Pool, settings: Settings, lab: Lab, append: Appender
) -> None:
    other, files = await _attachment_batch(pool, settings, lab, append)
    rows = await pool.fetch(
        "SELECT a.*, m.conversation_id AS msg_conv FROM attachments a JOIN messages m ON m.id = a.message_id")
    by_name = {r["filename"]: r for r in rows}
    assert set(by_name) == set(files)
    for name, (conv, data) in files.items():
        r = by_name[name]
        assert r["conversation_id"] == conv == r["msg_conv"], name
        assert r["size"] == len(data) and r["workspace_id"] == lab.workspace_id
        assert (settings.attachments_path / r["key"]).read_bytes() == data
    positions = [by_name[n]["position"] for n in ("a-one.pdf", "a-two.pdf", "x-one.pdf", "b-one.pdf")]
    assert positions == [0, 1, 0, 0]
    assert by_name["a-one.pdf"]["message_id"] == by_name["a-two.pdf"]["message_id"]

    # Each event describes its own files, numbered within its conversation in batch order.
    evs = await reply_events(pool)
    described = {a["filename"]: (d["conversationId"], a) for d in evs.values() for a in d["attachments"]}
    assert set(described) == set(files)
    urls = {name: a["downloadUrl"] for name, (_, a) in described.items()}
    base = f"{settings.public_url}/v1/inbox"
    assert urls == {
        "a-one.pdf": f"{base}/{lab.conversation_id}/attachments/0",
        "a-two.pdf": f"{base}/{lab.conversation_id}/attachments/1",
        "b-one.pdf": f"{base}/{lab.conversation_id}/attachments/2",
        "x-one.pdf": f"{base}/{other}/attachments/0",
    }
    for name, (conv, a) in described.items():
        assert conv == files[name][0]
        assert (a["size"], a["contentType"]) == (len(files[name][1]), "application/pdf")


async def test_download_urls_resolve_to_their_own_file(
    pool: asyncpg.Pool, settings: Settings, lab: Lab, append: Appender, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The n in an event's downloadUrl is what GET /v1/inbox/{id}/attachments/{n} serves.

    Message ids are random; replies of one batch share `created_at` (one transaction), so the
    API's order (created_at, id) falls back to the random id. Ids are made descending here so
    the outcome does not depend on chance."""
    counter = iter(range(0xFFFF, 0, -1))
    real = ingest_mod.new_id
    monkeypatch.setattr(ingest_mod, "new_id",
                        lambda prefix: f"msg_{next(counter):016x}" if prefix == "msg" else real(prefix))
    await _attachment_batch(pool, settings, lab, append)
    evs = await reply_events(pool)
    async with pool.acquire() as conn:
        for data in evs.values():
            for a in data["attachments"]:
                n = int(a["downloadUrl"].rsplit("/", 1)[1])
                served = await inboxdb.conversation_attachment(conn, data["conversationId"], n)
                assert served is not None and served["filename"] == a["filename"], (
                    f"{a['downloadUrl']} serves {served and served['filename']!r}, not {a['filename']!r}")


# --- (d) a bounce and a reply in one batch --------------------------------------------------


async def test_bounce_and_reply_in_one_batch(
    pool: asyncpg.Pool, settings: Settings, lab: Lab, append: Appender
) -> None:
    reply_rfc = rfc_id()
    reply = make_mail(sender=lab.lead, to=lab.mailbox_email, in_reply_to=lab.sent_rfc_id,
                      message_id=reply_rfc)
    hard = make_dsn(reporter="mx.example.test", to=lab.mailbox_email, failed=lab.lead,
                    original_id=lab.sent_rfc_id)
    _, other_rfc = await other_conversation(pool, lab)
    soft = make_dsn(reporter="mx.example.test", to=lab.mailbox_email, failed=lab.lead,
                    original_id=other_rfc, status="4.2.2")
    await append(lab.folder, reply, hard, soft)
    await fetch_batch(ingestor(pool, settings), lab)

    got = await inbound(pool)
    assert list(got) == [reply_rfc] and got[reply_rfc]["conversation_id"] == lab.conversation_id
    assert await count(pool, "SELECT count(*) FROM events WHERE type = 'reply.received'") == 1
    assert await pool.fetchval("SELECT status FROM messages WHERE id = $1", lab.sent_message_id) == "bounced"
    assert await pool.fetchval(
        "SELECT status FROM messages WHERE rfc_message_id = $1", other_rfc) == "sent"  # soft: unchanged
    supp = await pool.fetch("SELECT email, reason FROM suppressions WHERE workspace_id = $1",
                            lab.workspace_id)
    assert [(r["email"], r["reason"]) for r in supp] == [(lab.lead, "hard_bounce")]
    assert await count(pool, "SELECT bounced_total FROM mailboxes WHERE id = $1", lab.mailbox_id) == 1
    bounced = await pool.fetch("SELECT data FROM events WHERE type = 'email.bounced'")
    kinds = sorted((r["data"]["bounceType"], r["data"]["rfcMessageId"]) for r in bounced)
    assert kinds == sorted([("hard", lab.sent_rfc_id), ("soft", other_rfc)])
    assert await count(pool, "SELECT count(*) FROM outbox") == 3
    assert await count(pool, "SELECT count(*) FROM inbound_seen WHERE mailbox_id = $1", lab.mailbox_id) == 3
    assert await count(pool, "SELECT count(*) FROM inbound_quarantine") == 0


# --- (e) event data of batched replies ------------------------------------------------------


async def test_batched_reply_event_data_matches_the_shared_helper(
    pool: asyncpg.Pool, settings: Settings, lab: Lab, append: Appender
) -> None:
    other, other_rfc = await other_conversation(pool, lab)
    first, first_rfc = mail_with_files(sender=f"Bob <{lab.lead}>", to=lab.mailbox_email,
                                       in_reply_to=lab.sent_rfc_id, files=[("q.pdf", b"%PDF q")],
                                       body="Yes please.\n\nOn Mon, Alice wrote:\n> Hello")
    ooo_rfc, chain_rfc = rfc_id(), rfc_id()
    ooo = make_mail(sender=lab.lead, to=lab.mailbox_email, in_reply_to=other_rfc, message_id=ooo_rfc,
                    subject="Out of Office", headers={"Auto-Submitted": "auto-replied"})
    chain = make_mail(sender=lab.lead, to=lab.mailbox_email, in_reply_to=first_rfc, message_id=chain_rfc,
                      body="Also: Tuesday works.")
    await append(lab.folder, first, ooo, chain)
    await fetch_batch(ingestor(pool, settings), lab)

    got = await inbound(pool)
    evs = await reply_events(pool)
    assert len(evs) == 3
    stored = {r["data"]["messageId"]: r for r in await pool.fetch(
        "SELECT e.id, e.data, o.body FROM events e JOIN outbox o ON o.message_id = e.id"
        " WHERE e.type = 'reply.received'")}
    async with pool.acquire() as conn:
        for rfc, row in got.items():
            data = evs[row["id"]]
            shared = await events.message_event_data(conn, row["id"])
            assert {k: data[k] for k in SHARED} == shared, rfc
            assert data["content"] == row["text_body"]
            assert data["replyText"] == row["reply_text"]
            assert data["htmlContent"] == row["html_body"]
            assert data["isAutoReply"] is row["is_auto_reply"]
            assert data["receivedAt"] == iso(row["received_at"])
            # The published body is the stored event.
            body = orjson.loads(stored[row["id"]]["body"])
            assert body["data"] == data and body["type"] == "reply.received"
            assert body["id"] == stored[row["id"]]["id"] and body["workspaceId"] == lab.workspace_id
    first_data = evs[got[first_rfc]["id"]]
    assert first_data["replyText"] == "Yes please." and first_data["from"] == lab.lead
    assert [a["filename"] for a in first_data["attachments"]] == ["q.pdf"]
    assert evs[got[ooo_rfc]["id"]]["isAutoReply"] is True
    assert evs[got[ooo_rfc]["id"]]["conversationId"] == other
    assert evs[got[ooo_rfc]["id"]]["metadata"] == {"campaign": "c2", "step": 1}
    chained = evs[got[chain_rfc]["id"]]
    assert chained["conversationId"] == lab.conversation_id and chained["attachments"] == []
    assert chained["metadata"] == {"campaign": "c1", "step": 1}


# --- (f) a failure in the middle of a batch -------------------------------------------------


class FailingStorage(DirectoryStorage):
    """Refuses the file named `boom.pdf` (the batch's second message carries it)."""

    async def put(self, key: str, data: bytes) -> None:
        if key.endswith("/boom.pdf"):
            raise OSError("disk full")
        await super().put(key, data)


@pytest.mark.parametrize("how", ["fault", "storage"])
async def test_failure_mid_batch_rolls_back_all_and_replay_stores_each_once(
    pool: asyncpg.Pool, settings: Settings, lab: Lab, append: Appender, how: str
) -> None:
    a_rfc, b_rfc = rfc_id(), rfc_id()
    a = make_mail(sender=lab.lead, to=lab.mailbox_email, in_reply_to=lab.sent_rfc_id, message_id=a_rfc,
                  attachment=("ok.pdf", b"%PDF ok"))
    b, b_rfc = mail_with_files(sender=lab.lead, to=lab.mailbox_email, in_reply_to=a_rfc,
                               files=[("boom.pdf", b"%PDF boom")])
    hard = make_dsn(reporter="mx.example.test", to=lab.mailbox_email, failed=lab.lead,
                    original_id=lab.sent_rfc_id)
    stranger = make_mail(sender="someone@else.example", to=lab.mailbox_email, subject="hi")
    await append(lab.folder, a, a, b, hard, stranger)

    def crash(point: str) -> None:
        if point == "persisted":
            raise Crash(point)

    if how == "fault":
        broken = ingestor(pool, settings, fault=crash)
        expected: type[Exception] = Crash
    else:
        broken = ingestor(pool, settings, storage=FailingStorage(settings.attachments_path))
        expected = OSError
    with pytest.raises(expected):
        await fetch_batch(broken, lab)

    # Nothing of the batch is left: no rows, no claims, no side effects, no cursor.
    for table in ("inbound_seen", "inbound_quarantine", "attachments", "events", "outbox", "suppressions"):
        assert await count(pool, f"SELECT count(*) FROM {table}") == 0, table
    assert await count(pool, "SELECT count(*) FROM messages WHERE direction = 'inbound'") == 0
    assert await pool.fetchval("SELECT status FROM messages WHERE id = $1", lab.sent_message_id) == "sent"
    assert await count(pool, "SELECT unread_count FROM conversations WHERE id = $1", lab.conversation_id) == 0
    assert await count(pool, "SELECT bounced_total FROM mailboxes WHERE id = $1", lab.mailbox_id) == 0
    assert await leasedb.get_cursor(pool, lab.mailbox_id, lab.folder) is None

    # The batch is fetched again (the cursor did not move): each message is handled once.
    uids, last = await fetch_batch(ingestor(pool, settings), lab)
    assert last == uids[-1] and len(uids) == 5
    got = await inbound(pool)
    assert set(got) == {a_rfc, b_rfc}
    assert {r["conversation_id"] for r in got.values()} == {lab.conversation_id}
    assert await count(pool, "SELECT count(*) FROM events WHERE type = 'reply.received'") == 2
    assert await count(pool, "SELECT count(*) FROM events WHERE type = 'email.bounced'") == 1
    assert await count(pool, "SELECT count(*) FROM outbox") == 3
    assert await count(pool, "SELECT count(*) FROM inbound_quarantine") == 1
    assert await count(pool, "SELECT count(*) FROM inbound_seen") == 4
    assert await count(pool, "SELECT count(*) FROM attachments") == 2
    assert await count(pool, "SELECT unread_count FROM conversations WHERE id = $1", lab.conversation_id) == 2
    assert await count(pool, "SELECT bounced_total FROM mailboxes WHERE id = $1", lab.mailbox_id) == 1
    assert await pool.fetchval("SELECT status FROM messages WHERE id = $1", lab.sent_message_id) == "bounced"

    # A resync (the same UIDs fetched once more) adds nothing.
    await fetch_batch(ingestor(pool, settings), lab)
    assert await count(pool, "SELECT count(*) FROM messages WHERE direction = 'inbound'") == 2
    assert await count(pool, "SELECT count(*) FROM events") == 3
    assert await count(pool, "SELECT count(*) FROM inbound_quarantine") == 1
