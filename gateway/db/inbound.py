"""Queries of the poller: cursors, leases, threading look-ups, inbound messages, bounces."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway.ids import new_id

_ELIGIBLE = "m.status = 'active' AND m.deleted_at IS NULL AND m.imap IS NOT NULL"


@dataclass(frozen=True)
class Cursor:
    uidvalidity: int
    last_uid: int


# --- cursors ------------------------------------------------------------------------------


async def get_cursor(conn: asyncpg.Connection | asyncpg.Pool, mailbox_id: str, folder: str) -> Cursor | None:
    row = await conn.fetchrow(
        "SELECT uidvalidity, last_uid FROM imap_cursors WHERE mailbox_id = $1 AND folder = $2",
        mailbox_id, folder,
    )
    return Cursor(row["uidvalidity"], row["last_uid"]) if row else None


async def set_cursor(
    conn: asyncpg.Connection | asyncpg.Pool, mailbox_id: str, folder: str, uidvalidity: int, last_uid: int
) -> None:
    await conn.execute(
        "INSERT INTO imap_cursors (mailbox_id, folder, uidvalidity, last_uid) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (mailbox_id, folder) DO UPDATE SET uidvalidity = EXCLUDED.uidvalidity,"
        "  last_uid = EXCLUDED.last_uid, updated_at = now()",
        mailbox_id, folder, uidvalidity, last_uid,
    )


# --- mailboxes and leases -----------------------------------------------------------------


async def mailbox_for_watch(pool: asyncpg.Pool, mailbox_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow(
        f"SELECT m.id, m.workspace_id, m.email, m.imap, m.imap_password_enc FROM mailboxes m"
        f" WHERE m.id = $1 AND {_ELIGIBLE}",
        mailbox_id,
    )


async def heartbeat(pool: asyncpg.Pool, owner: str, seconds: float) -> int:
    """Announce this poller alive; returns how many pollers are alive (this one included)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO poller_heartbeats (owner, expires_at)"
            " VALUES ($1, now() + make_interval(secs => $2))"
            " ON CONFLICT (owner) DO UPDATE SET expires_at = EXCLUDED.expires_at",
            owner, seconds,
        )
        await conn.execute("DELETE FROM poller_heartbeats WHERE expires_at < now() - interval '1 hour'")
        alive: int = await conn.fetchval("SELECT count(*) FROM poller_heartbeats WHERE expires_at > now()")
    return alive


async def drop_heartbeat(pool: asyncpg.Pool, owner: str) -> None:
    await pool.execute("DELETE FROM poller_heartbeats WHERE owner = $1", owner)


async def count_eligible(pool: asyncpg.Pool) -> int:
    n: int = await pool.fetchval(f"SELECT count(*) FROM mailboxes m WHERE {_ELIGIBLE}")
    return n


async def renew_leases(pool: asyncpg.Pool, owner: str, held: list[str], seconds: float) -> set[str]:
    """Extend this owner's leases on mailboxes still eligible; returns those still held."""
    rows = await pool.fetch(
        "UPDATE mailbox_leases l SET expires_at = now() + make_interval(secs => $3)"
        f" FROM mailboxes m WHERE l.mailbox_id = m.id AND l.owner = $1"
        f" AND l.mailbox_id = ANY($2::text[]) AND {_ELIGIBLE} RETURNING l.mailbox_id",
        owner, held, seconds,
    )
    return {r["mailbox_id"] for r in rows}


async def acquire_leases(pool: asyncpg.Pool, owner: str, limit: int, seconds: float) -> list[str]:
    """Take up to `limit` free or expired leases (one atomic upsert per candidate)."""
    if limit <= 0:
        return []
    candidates = await pool.fetch(
        f"SELECT m.id FROM mailboxes m LEFT JOIN mailbox_leases l ON l.mailbox_id = m.id"
        f" WHERE {_ELIGIBLE} AND (l.mailbox_id IS NULL OR l.expires_at < now() OR l.owner = $1)"
        f" ORDER BY random() LIMIT $2",
        owner, limit,
    )
    won: list[str] = []
    for row in candidates:
        got = await pool.fetchval(
            "INSERT INTO mailbox_leases (mailbox_id, owner, expires_at)"
            " VALUES ($1, $2, now() + make_interval(secs => $3))"
            " ON CONFLICT (mailbox_id) DO UPDATE SET owner = EXCLUDED.owner,"
            "  expires_at = EXCLUDED.expires_at"
            " WHERE mailbox_leases.expires_at < now() OR mailbox_leases.owner = EXCLUDED.owner"
            " RETURNING mailbox_id",
            row["id"], owner, seconds,
        )
        if got is not None:
            won.append(got)
    return won


async def release_leases(pool: asyncpg.Pool, owner: str, mailbox_ids: list[str]) -> None:
    await pool.execute(
        "DELETE FROM mailbox_leases WHERE owner = $1 AND mailbox_id = ANY($2::text[])", owner, mailbox_ids
    )


async def hold_lease(conn: asyncpg.Connection, mailbox_id: str, owner: str) -> bool:
    """Fence a batch: the lease is still ours and unexpired (locked until the commit)."""
    row = await conn.fetchval(
        "SELECT 1 FROM mailbox_leases WHERE mailbox_id = $1 AND owner = $2 AND expires_at > now()"
        " FOR UPDATE",
        mailbox_id, owner,
    )
    return row is not None


# --- exactly once -------------------------------------------------------------------------


async def claim(
    conn: asyncpg.Connection, mailbox_id: str, rfc_message_id: str, outcome: str, message_id: str | None
) -> bool:
    """Record that this message is handled; False when it was handled before."""
    got = await conn.fetchval(
        "INSERT INTO inbound_seen (mailbox_id, rfc_message_id, outcome, message_id)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1",
        mailbox_id, rfc_message_id, outcome, message_id,
    )
    return got is not None


async def quarantine(
    conn: asyncpg.Connection,
    *,
    mailbox_id: str,
    folder: str,
    uidvalidity: int,
    uid: int,
    rfc_message_id: str,
    reason: str,
    raw: bytes,
    detail: str | None,
) -> str:
    qid = new_id("inq")
    await conn.execute(
        "INSERT INTO inbound_quarantine (id, mailbox_id, folder, uidvalidity, uid, rfc_message_id,"
        " reason, raw, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        qid, mailbox_id, folder, uidvalidity, uid, rfc_message_id, reason, raw,
        detail[:1000] if detail else None,
    )
    return qid


# --- threading ----------------------------------------------------------------------------


async def is_own_outbound(conn: asyncpg.Connection, workspace_id: str, rfc_message_id: str) -> bool:
    got = await conn.fetchval(
        "SELECT 1 FROM messages WHERE workspace_id = $1 AND rfc_message_id = $2"
        " AND direction = 'outbound' LIMIT 1",
        workspace_id, rfc_message_id,
    )
    return got is not None


async def thread_by_ids(
    conn: asyncpg.Connection, workspace_id: str, mailbox_id: str, ids: list[str]
) -> asyncpg.Record | None:
    """The conversation holding one of these Message-IDs (the mailbox's own first, then the
    earliest id in the list, i.e. the direct parent), with the matched message's metadata."""
    if not ids:
        return None
    return await conn.fetchrow(
        "SELECT c.id, c.lead_email, c.metadata AS conv_metadata, m.metadata"
        " FROM messages m JOIN conversations c ON c.id = m.conversation_id"
        " WHERE m.workspace_id = $1 AND m.rfc_message_id = ANY($3::text[])"
        " ORDER BY (c.mailbox_id = $2) IS TRUE DESC, array_position($3::text[], m.rfc_message_id),"
        "  m.created_at DESC LIMIT 1",
        workspace_id, mailbox_id, ids,
    )


async def thread_by_lead(
    conn: asyncpg.Connection, workspace_id: str, mailbox_id: str, sender: str
) -> asyncpg.Record | None:
    """The most recent conversation with this lead of an identity whose pool has the mailbox."""
    return await conn.fetchrow(
        "SELECT c.id, c.lead_email, c.metadata AS conv_metadata, c.metadata"
        " FROM conversations c JOIN identity_mailboxes im ON im.identity_id = c.identity_id"
        " WHERE c.workspace_id = $1 AND im.mailbox_id = $2 AND lower(c.lead_email) = lower($3)"
        " ORDER BY (c.mailbox_id = $2) IS TRUE DESC, c.last_activity_at DESC LIMIT 1",
        workspace_id, mailbox_id, sender,
    )


# --- replies ------------------------------------------------------------------------------


async def insert_reply(conn: asyncpg.Connection, values: dict[str, Any]) -> bool:
    """Insert an inbound reply; False when (mailbox, Message-ID) is already there."""
    cols = list(values)
    placeholders = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
    names = ", ".join(f'"{c}"' for c in cols)
    got = await conn.fetchval(
        f"INSERT INTO messages ({names}) VALUES ({placeholders})"
        " ON CONFLICT (mailbox_id, rfc_message_id) WHERE direction = 'inbound' DO NOTHING RETURNING 1",
        *values.values(),
    )
    return got is not None


async def touch_conversation(
    conn: asyncpg.Connection, conversation_id: str, unread_increment: int, activity_at: datetime
) -> None:
    await conn.execute(
        "UPDATE conversations SET unread_count = unread_count + $2,"
        " last_activity_at = GREATEST(last_activity_at, $3), updated_at = now() WHERE id = $1",
        conversation_id, unread_increment, activity_at,
    )


async def conversation_attachment_count(conn: asyncpg.Connection, conversation_id: str) -> int:
    n: int = await conn.fetchval(
        "SELECT count(*) FROM attachments WHERE conversation_id = $1", conversation_id
    )
    return n


async def insert_attachment(
    conn: asyncpg.Connection,
    *,
    workspace_id: str,
    key: str,
    filename: str,
    content_type: str,
    size: int,
    message_id: str,
    conversation_id: str,
    position: int,
) -> None:
    # clock_timestamp(): rows of one transaction keep their insertion order by created_at.
    await conn.execute(
        "INSERT INTO attachments (id, workspace_id, key, filename, content_type, size, message_id,"
        " conversation_id, position, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, clock_timestamp())",
        new_id("att"), workspace_id, key, filename, content_type, size, message_id,
        conversation_id, position,
    )


# --- bounces ------------------------------------------------------------------------------


async def sent_by_rfc_id(
    conn: asyncpg.Connection, workspace_id: str, rfc_message_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, mailbox_id, to_emails, status FROM messages"
        " WHERE workspace_id = $1 AND rfc_message_id = $2 AND direction = 'outbound'"
        " ORDER BY created_at DESC LIMIT 1",
        workspace_id, rfc_message_id,
    )


async def latest_sent_to(conn: asyncpg.Connection, mailbox_id: str, email: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, mailbox_id, to_emails, status FROM messages"
        " WHERE mailbox_id = $1 AND direction = 'outbound' AND status IN ('sent', 'bounced')"
        "  AND lower($2) = ANY(SELECT lower(t) FROM unnest(to_emails) t)"
        " ORDER BY created_at DESC LIMIT 1",
        mailbox_id, email,
    )


async def mark_bounced(conn: asyncpg.Connection, message_id: str, diagnostic: str | None) -> str | None:
    """Set status `bounced` once; returns the mailbox to count the bounce on when it changed."""
    row = await conn.fetchrow(
        "UPDATE messages SET status = 'bounced', error = COALESCE($2, error)"
        " WHERE id = $1 AND status IS DISTINCT FROM 'bounced' RETURNING mailbox_id",
        message_id, diagnostic[:1000] if diagnostic else None,
    )
    if row is None:
        return None
    if row["mailbox_id"] is not None:
        await conn.execute(
            "UPDATE mailboxes SET bounced_total = bounced_total + 1, updated_at = now() WHERE id = $1",
            row["mailbox_id"],
        )
    mailbox: str = row["mailbox_id"] or ""
    return mailbox


async def suppress_hard_bounce(conn: asyncpg.Connection, workspace_id: str, email: str) -> None:
    await conn.execute(
        "INSERT INTO suppressions (workspace_id, email, reason) VALUES ($1, lower($2), 'hard_bounce')"
        " ON CONFLICT DO NOTHING",
        workspace_id, email,
    )


# --- batched ingestion (one round trip per step for a whole fetched batch) ------------------


async def batch_context(
    conn: asyncpg.Connection, mailbox_id: str, rfc_message_ids: list[str]
) -> tuple[str | None, set[str]]:
    """The mailbox's address (for event data) and which of these Message-IDs were handled before."""
    row = await conn.fetchrow(
        "SELECT (SELECT email FROM mailboxes WHERE id = $1) AS email,"
        " ARRAY(SELECT rfc_message_id FROM inbound_seen"
        "       WHERE mailbox_id = $1 AND rfc_message_id = ANY($2::text[])) AS seen",
        mailbox_id, rfc_message_ids,
    )
    assert row is not None  # a SELECT without FROM always has its one row
    return row["email"], set(row["seen"] or ())


async def own_outbound_ids(
    conn: asyncpg.Connection, workspace_id: str, rfc_message_ids: list[str]
) -> set[str]:
    """Those of these Message-IDs that name mail the gateway sent (`is_own_outbound` for many)."""
    if not rfc_message_ids:
        return set()
    rows = await conn.fetch(
        "SELECT DISTINCT rfc_message_id FROM messages WHERE workspace_id = $1"
        " AND rfc_message_id = ANY($2::text[]) AND direction = 'outbound'",
        workspace_id, rfc_message_ids,
    )
    return {r["rfc_message_id"] for r in rows}


async def thread_candidates_by_ids(
    conn: asyncpg.Connection, workspace_id: str, mailbox_id: str, ids: list[str]
) -> dict[str, asyncpg.Record]:
    """Per Message-ID, the message `thread_by_ids` would prefer for it (this mailbox's
    conversations first, then the newest), with its conversation, metadata and identity handle.
    The caller picks among a message's references (earliest in its list wins)."""
    if not ids:
        return {}
    rows = await conn.fetch(
        "SELECT DISTINCT ON (m.rfc_message_id) m.rfc_message_id, c.id, c.lead_email, c.mailbox_id,"
        "  c.metadata AS conv_metadata, m.metadata, i.handle"
        " FROM messages m JOIN conversations c ON c.id = m.conversation_id"
        " LEFT JOIN identities i ON i.id = c.identity_id"
        " WHERE m.workspace_id = $1 AND m.rfc_message_id = ANY($3::text[])"
        " ORDER BY m.rfc_message_id, (c.mailbox_id = $2) IS TRUE DESC, m.created_at DESC",
        workspace_id, mailbox_id, ids,
    )
    return {r["rfc_message_id"]: r for r in rows}


async def thread_candidates_by_lead(
    conn: asyncpg.Connection, workspace_id: str, mailbox_id: str, senders: list[str]
) -> list[asyncpg.Record]:
    """Every conversation `thread_by_lead` could choose for these senders (`lead_key` is the
    lower-cased lead address); the caller orders them as `thread_by_lead` does."""
    if not senders:
        return []
    return await conn.fetch(
        "SELECT c.id, c.lead_email, c.mailbox_id, c.metadata AS conv_metadata, c.metadata,"
        "  c.last_activity_at, i.handle, lower(c.lead_email) AS lead_key"
        " FROM conversations c JOIN identity_mailboxes im ON im.identity_id = c.identity_id"
        " LEFT JOIN identities i ON i.id = c.identity_id"
        " WHERE c.workspace_id = $1 AND im.mailbox_id = $2 AND lower(c.lead_email) = ANY($3::text[])",
        workspace_id, mailbox_id, sorted({s.lower() for s in senders}),
    )


async def claim_many(
    conn: asyncpg.Connection, mailbox_id: str, claims: list[tuple[str, str, str | None]]
) -> set[str]:
    """`claim` for many (rfc_message_id, outcome, message_id); returns the Message-IDs claimed now."""
    if not claims:
        return set()
    rows = await conn.fetch(
        "INSERT INTO inbound_seen (mailbox_id, rfc_message_id, outcome, message_id)"
        " SELECT $1, u.rfc, u.outcome, u.msg"
        " FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS u(rfc, outcome, msg, ord)"
        " ORDER BY u.ord ON CONFLICT DO NOTHING RETURNING rfc_message_id",
        mailbox_id, [c[0] for c in claims], [c[1] for c in claims], [c[2] for c in claims],
    )
    return {r["rfc_message_id"] for r in rows}


@dataclass(frozen=True)
class QuarantineRow:
    uid: int
    rfc_message_id: str
    reason: str
    raw: bytes
    detail: str | None


async def quarantine_many(
    conn: asyncpg.Connection, *, mailbox_id: str, folder: str, uidvalidity: int, rows: list[QuarantineRow]
) -> None:
    if not rows:
        return
    await conn.execute(
        "INSERT INTO inbound_quarantine (id, mailbox_id, folder, uidvalidity, uid, rfc_message_id,"
        " reason, raw, detail)"
        " SELECT u.id, $1, $2, $3, u.uid, u.rfc, u.reason, u.raw, u.detail"
        " FROM unnest($4::text[], $5::bigint[], $6::text[], $7::text[], $8::bytea[], $9::text[])"
        "  WITH ORDINALITY AS u(id, uid, rfc, reason, raw, detail, ord) ORDER BY u.ord",
        mailbox_id, folder, uidvalidity,
        [new_id("inq") for _ in rows], [r.uid for r in rows], [r.rfc_message_id for r in rows],
        [r.reason for r in rows], [bytes(r.raw) for r in rows],
        [r.detail[:1000] if r.detail else None for r in rows],
    )


# Columns of an inbound reply, with the types jsonb_to_recordset reads them as.
REPLY_COLUMNS: dict[str, str] = {
    "id": "text", "conversation_id": "text", "workspace_id": "text", "mailbox_id": "text",
    "type": "text", "direction": "text", "rfc_message_id": "text", "in_reply_to": "text",
    "references": "text[]", "from_email": "text", "from_name": "text", "to_emails": "text[]",
    "cc_emails": "text[]", "subject": "text", "text_body": "text", "html_body": "text",
    "reply_text": "text", "metadata": "jsonb", "is_from_lead": "boolean", "is_auto_reply": "boolean",
    "read": "boolean", "received_at": "timestamptz",
}
_REPLY_NAMES = ", ".join(f'"{c}"' for c in REPLY_COLUMNS)
_REPLY_TYPES = ", ".join(f'"{c}" {t}' for c, t in REPLY_COLUMNS.items())


async def insert_replies(conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> set[str]:
    """`insert_reply` for many rows (keys: REPLY_COLUMNS) in one statement; returns the ids
    inserted (a row whose (mailbox, Message-ID) is already there is skipped)."""
    if not rows:
        return set()
    got = await conn.fetch(
        # created_at steps by a microsecond per row: one transaction's now() is the same for
        # every row, and conversation order (attachment numbering, newest message) needs a tie-break.
        f"INSERT INTO messages ({_REPLY_NAMES}, created_at)"
        f" SELECT {_REPLY_NAMES}, now() + ord * interval '1 microsecond'"
        f" FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS ({_REPLY_TYPES}))"
        f" WITH ORDINALITY AS r({_REPLY_NAMES}, ord) ORDER BY ord"
        " ON CONFLICT (mailbox_id, rfc_message_id) WHERE direction = 'inbound' DO NOTHING RETURNING id",
        rows,
    )
    return {r["id"] for r in got}


async def touch_conversations(
    conn: asyncpg.Connection, updates: dict[str, tuple[int, datetime]]
) -> None:
    """`touch_conversation` for many: conversation id → (unread increment, latest activity)."""
    if not updates:
        return
    ids = list(updates)
    await conn.execute(
        "UPDATE conversations c SET unread_count = c.unread_count + u.inc,"
        " last_activity_at = GREATEST(c.last_activity_at, u.at), updated_at = now()"
        " FROM unnest($1::text[], $2::int[], $3::timestamptz[]) AS u(id, inc, at) WHERE c.id = u.id",
        ids, [updates[i][0] for i in ids], [updates[i][1] for i in ids],
    )


async def attachment_counts(conn: asyncpg.Connection, conversation_ids: list[str]) -> dict[str, int]:
    if not conversation_ids:
        return {}
    rows = await conn.fetch(
        "SELECT conversation_id, count(*) AS n FROM attachments WHERE conversation_id = ANY($1::text[])"
        " GROUP BY conversation_id",
        conversation_ids,
    )
    return {r["conversation_id"]: int(r["n"]) for r in rows}


@dataclass(frozen=True)
class AttachmentRow:
    key: str
    filename: str
    content_type: str
    size: int
    message_id: str
    conversation_id: str
    position: int


async def insert_attachments(conn: asyncpg.Connection, workspace_id: str, rows: list[AttachmentRow]) -> None:
    if not rows:
        return
    # clock_timestamp() per row, in list order: rows keep their insertion order by created_at.
    await conn.execute(
        "INSERT INTO attachments (id, workspace_id, key, filename, content_type, size, message_id,"
        " conversation_id, position, created_at)"
        " SELECT u.id, $1, u.key, u.filename, u.ctype, u.size, u.msg, u.conv, u.pos, clock_timestamp()"
        " FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[],"
        "  $8::text[], $9::int[]) WITH ORDINALITY AS u(id, key, filename, ctype, size, msg, conv, pos, ord)"
        " ORDER BY u.ord",
        workspace_id, [new_id("att") for _ in rows], [r.key for r in rows], [r.filename for r in rows],
        [r.content_type for r in rows], [r.size for r in rows], [r.message_id for r in rows],
        [r.conversation_id for r in rows], [r.position for r in rows],
    )


async def stage_events(
    conn: asyncpg.Connection,
    exchange: str,
    workspace_id: str,
    events: list[dict[str, Any]],
    bodies: list[bytes],
) -> list[int]:
    """`events.stage` for many already-built events (with their serialized bodies): the event
    rows and their outbox rows in one statement; returns the outbox ids in the events' order."""
    if not events:
        return []
    rows = await conn.fetch(
        "WITH ev AS (INSERT INTO events (id, workspace_id, type, data)"
        "  SELECT u.id, $2, u.type, u.data"
        "  FROM unnest($3::text[], $4::text[], $5::jsonb[]) AS u(id, type, data))"
        " INSERT INTO outbox (exchange, routing_key, message_id, body, headers, available_at)"
        " SELECT $1, u.type, u.id, u.body, '{}'::jsonb, now()"
        " FROM unnest($3::text[], $4::text[], $6::bytea[]) WITH ORDINALITY AS u(id, type, body, ord)"
        " ORDER BY u.ord RETURNING id, message_id",
        exchange, workspace_id, [e["id"] for e in events], [e["type"] for e in events],
        [e["data"] for e in events], bodies,
    )
    by_event = {r["message_id"]: int(r["id"]) for r in rows}
    return [by_event[e["id"]] for e in events]


async def mark_published(conn: asyncpg.Connection | asyncpg.Pool, outbox_ids: list[int]) -> None:
    if outbox_ids:
        await conn.execute(
            "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[]) AND published_at IS NULL",
            outbox_ids,
        )
