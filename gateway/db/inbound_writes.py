"""Writes of ingestion, run in the batch's transaction: claims, quarantine, replies with their
attachments, bounces, and the events staged with their outbox rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway.db.inbound_leases import cursor_upsert
from gateway.ids import new_id

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


# --- quarantine ---------------------------------------------------------------------------


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


# --- replies and attachments --------------------------------------------------------------


# Columns of an inbound reply, with the types jsonb_to_recordset reads them as.
REPLY_COLUMNS: dict[str, str] = {
    "id": "text", "conversation_id": "text", "workspace_id": "text", "mailbox_id": "text",
    "type": "text", "direction": "text", "rfc_message_id": "text", "in_reply_to": "text",
    "references": "text[]", "from_email": "text", "from_name": "text", "to_emails": "text[]",
    "cc_emails": "text[]", "subject": "text", "text_body": "text", "html_body": "text",
    "reply_text": "text", "metadata": "jsonb", "is_from_lead": "boolean", "is_auto_reply": "boolean",
    "read": "boolean", "received_at": "timestamptz",
}
# The bodies travel as text[] parameters (binary protocol: PostgreSQL copies them as they are)
# and the rest as one jsonb document: parsing the bodies as JSON strings (escapes and all)
# cost PostgreSQL ~4 ms per 100 replies of ~3 KB, more than the rest of the insert.
REPLY_TEXTS = ("text_body", "html_body", "reply_text")
_REPLY_SHORT = {c: t for c, t in REPLY_COLUMNS.items() if c not in REPLY_TEXTS}
_REPLY_NAMES = ", ".join(f'"{c}"' for c in [*_REPLY_SHORT, *REPLY_TEXTS])
_REPLY_SHORT_TYPES = ", ".join(f'"{c}" {t}' for c, t in _REPLY_SHORT.items())


async def insert_replies(conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> set[str]:
    """Insert inbound replies (keys: REPLY_COLUMNS) in one statement; returns the ids
    inserted (a row whose (mailbox, Message-ID) is already there is skipped)."""
    if not rows:
        return set()
    got = await conn.fetch(
        # created_at steps by a microsecond per row: one transaction's now() is the same for
        # every row, and conversation order (attachment numbering, newest message) needs a tie-break.
        f"INSERT INTO messages ({_REPLY_NAMES}, created_at)"
        f" SELECT {_REPLY_NAMES}, now() + ord * interval '1 microsecond'"
        f" FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS ({_REPLY_SHORT_TYPES}),"
        "  unnest($2::text[]), unnest($3::text[]), unnest($4::text[]))"
        f" WITH ORDINALITY AS r({_REPLY_NAMES}, ord) ORDER BY ord"
        " ON CONFLICT (mailbox_id, rfc_message_id) WHERE direction = 'inbound' DO NOTHING RETURNING id",
        [{c: row[c] for c in _REPLY_SHORT} for row in rows],
        *([row[c] for row in rows] for c in REPLY_TEXTS),
    )
    return {r["id"] for r in got}


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


# --- bounces ------------------------------------------------------------------------------


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


# --- the batch's last statement -----------------------------------------------------------


@dataclass(frozen=True)
class CursorMove:
    mailbox_id: str
    folder: str
    uidvalidity: int
    last_uid: int


# Conversation counters: $1 ids, $2 unread increments, $3 latest activity.
_TOUCH = ("UPDATE conversations c SET unread_count = c.unread_count + u.inc,"
          " last_activity_at = GREATEST(c.last_activity_at, u.at), updated_at = now()"
          " FROM unnest($1::text[], $2::int[], $3::timestamptz[]) AS u(id, inc, at) WHERE c.id = u.id")
# Events and their outbox rows: $4 exchange, $5 workspace, $6 event ids, $7 types, $8 bodies.
# The event rows' `data` is read from the bodies: a jsonb[] parameter goes through asyncpg's
# text array format (every element escaped, then unescaped by the server), ~4 ms per 100
# events of ~3 KB, where the bodies are sent as they are.
_EVENTS = ("INSERT INTO events (id, workspace_id, type, data)"
           " SELECT u.id, $5, u.type, convert_from(u.body, 'UTF8')::jsonb -> 'data'"
           " FROM unnest($6::text[], $7::text[], $8::bytea[]) AS u(id, type, body)")
_OUTBOX = ("INSERT INTO outbox (exchange, routing_key, message_id, body, headers, available_at)"
           " SELECT $4, u.type, u.id, u.body, '{}'::jsonb, now()"
           " FROM unnest($6::text[], $7::text[], $8::bytea[]) WITH ORDINALITY AS u(id, type, body, ord)"
           " ORDER BY u.ord RETURNING id, message_id")
# Data-modifying WITH queries always run to completion, read or not.
_FINISH = f"WITH touched AS ({_TOUCH}), ev AS ({_EVENTS}), cur AS ({cursor_upsert(9)}) {_OUTBOX}"


async def finish_batch(
    conn: asyncpg.Connection,
    *,
    touched: dict[str, tuple[int, datetime]],
    exchange: str,
    workspace_id: str,
    events: list[dict[str, Any]],
    bodies: list[bytes],
    cursor: CursorMove,
) -> list[int]:
    """The batch's last statement: conversation counters (id → (unread increment, latest
    activity)), the events (with their serialized bodies, the `orjson.dumps` of each) and their
    outbox rows, and the folder cursor; returns the outbox ids in the events' order.

    One statement rather than three: in a busy poller each round trip of the batch transaction
    also waits its turn on the event loop."""
    ids = list(touched)
    rows = await conn.fetch(
        _FINISH,
        ids, [touched[i][0] for i in ids], [touched[i][1] for i in ids],
        exchange, workspace_id, [e["id"] for e in events], [e["type"] for e in events], bodies,
        cursor.mailbox_id, cursor.folder, cursor.uidvalidity, cursor.last_uid,
    )
    by_event = {r["message_id"]: int(r["id"]) for r in rows}
    return [by_event[e["id"]] for e in events]


async def mark_published(conn: asyncpg.Connection | asyncpg.Pool, outbox_ids: list[int]) -> None:
    if outbox_ids:
        await conn.execute(
            "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[]) AND published_at IS NULL",
            outbox_ids,
        )
