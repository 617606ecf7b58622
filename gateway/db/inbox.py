"""Queries behind the inbox API: conversations, their messages, attachments, scheduled replies, jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

Conn = asyncpg.Connection | asyncpg.Pool

# Unread = lead replies not yet read; computed from messages so it can never drift.
_UNREAD = (
    "(SELECT count(*) FROM messages um WHERE um.conversation_id = c.id"
    " AND um.direction = 'inbound' AND um.is_from_lead AND NOT um.read)::int"
)
_CONVERSATION = (
    f"SELECT c.*, i.handle, i.display_name AS identity_display_name, i.timezone,"
    f" mb.email AS mailbox_email, {_UNREAD} AS unread"
    " FROM conversations c JOIN identities i ON i.id = c.identity_id"
    " LEFT JOIN mailboxes mb ON mb.id = c.mailbox_id"
)


async def list_conversations(
    conn: Conn,
    workspace_id: str,
    *,
    identity: str | None,
    unread: bool | None,
    ai_tag: str | None,
    tag: str | None,
    status: str | None,
    q: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[asyncpg.Record]:
    where = ["c.workspace_id = $1"]
    args: list[Any] = [workspace_id]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if identity is not None:
        where.append(f"lower(i.handle) = lower({arg(identity)})")
    if unread is not None:
        where.append(f"({_UNREAD} > 0) = {arg(unread)}")
    if ai_tag is not None:
        where.append(f"c.ai_tag = {arg(ai_tag)}")
    if tag is not None:
        where.append(f"{arg(tag)} = ANY(c.tags)")
    if status is not None:
        where.append(f"c.status = {arg(status)}")
    if q:
        like = arg("%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        where.append(
            f"(c.lead_email ILIKE {like} OR c.subject ILIKE {like}"
            f" OR coalesce(c.lead->>'firstName', '') ILIKE {like}"
            f" OR coalesce(c.lead->>'lastName', '') ILIKE {like}"
            f" OR (coalesce(c.lead->>'firstName', '') || ' ' || coalesce(c.lead->>'lastName', ''))"
            f" ILIKE {like})"
        )
    if after is not None:
        where.append(f"(c.last_activity_at, c.id) < ({arg(after[0])}, {arg(after[1])})")
    sql = (
        f"{_CONVERSATION} WHERE {' AND '.join(where)}"
        f" ORDER BY c.last_activity_at DESC, c.id DESC LIMIT {arg(limit)}"
    )
    rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
    return rows


async def get_conversation(conn: Conn, workspace_id: str, conv_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"{_CONVERSATION} WHERE c.workspace_id = $1 AND c.id = $2", workspace_id, conv_id
    )
    return row


async def lock_conversation(
    conn: asyncpg.Connection, workspace_id: str, conv_id: str
) -> asyncpg.Record | None:
    """The conversation row locked for this transaction (replies and forwards serialise on it)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT c.*, i.handle, i.display_name AS identity_display_name, i.timezone"
        " FROM conversations c JOIN identities i ON i.id = c.identity_id"
        " WHERE c.workspace_id = $1 AND c.id = $2 FOR UPDATE OF c",
        workspace_id, conv_id,
    )
    return row


async def messages_of(conn: Conn, conv_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM messages WHERE conversation_id = $1 ORDER BY created_at, id", conv_id
    )
    return rows


async def newest_message(conn: Conn, conv_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT rfc_message_id, in_reply_to, \"references\" FROM messages"
        " WHERE conversation_id = $1 AND NOT (direction = 'outbound' AND job_id IS NOT NULL)"
        " ORDER BY created_at DESC, id DESC LIMIT 1",
        conv_id,
    )
    return row


_CONV_ATTACHMENTS = (
    "SELECT a.*, m.type AS message_type FROM attachments a JOIN messages m ON m.id = a.message_id"
    " WHERE m.conversation_id = $1"
    " ORDER BY m.created_at, m.id, a.position NULLS LAST, a.created_at, a.id"
)


async def conversation_attachments(conn: Conn, conv_id: str) -> list[asyncpg.Record]:
    """Every attachment of the conversation in the order that numbers `downloadUrl`s."""
    rows: list[asyncpg.Record] = await conn.fetch(_CONV_ATTACHMENTS, conv_id)
    return rows


async def conversation_attachment(conn: Conn, conv_id: str, n: int) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(f"{_CONV_ATTACHMENTS} OFFSET $2 LIMIT 1", conv_id, n)
    return row


async def visible_scheduled_replies(conn: Conn, conv_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM scheduled_replies WHERE conversation_id = $1"
        " AND status IN ('pending', 'sending', 'failed') ORDER BY scheduled_for, id",
        conv_id,
    )
    return rows


async def update_conversation(
    conn: asyncpg.Connection, conv_id: str, changes: dict[str, Any]
) -> None:
    if not changes:
        return
    sets, args = [], [conv_id]
    for column, value in changes.items():
        args.append(value)
        sets.append(f"{column} = ${len(args)}")
    await conn.execute(
        f"UPDATE conversations SET {', '.join(sets)}, updated_at = now() WHERE id = $1", *args
    )


async def mark_all_read(conn: asyncpg.Connection, conv_id: str) -> None:
    await conn.execute(
        "UPDATE messages SET read = true WHERE conversation_id = $1"
        " AND direction = 'inbound' AND is_from_lead AND NOT read",
        conv_id,
    )


async def mark_newest_unread(conn: asyncpg.Connection, conv_id: str) -> None:
    await conn.execute(
        "UPDATE messages SET read = false WHERE id = (SELECT id FROM messages"
        " WHERE conversation_id = $1 AND direction = 'inbound' AND is_from_lead"
        " ORDER BY created_at DESC, id DESC LIMIT 1)",
        conv_id,
    )


async def sync_unread(conn: asyncpg.Connection, conv_id: str) -> int:
    """Store the computed unread count on the conversation (kept for cheap listing elsewhere)."""
    count: int = await conn.fetchval(
        "UPDATE conversations c SET unread_count = " + _UNREAD + " WHERE c.id = $1 RETURNING unread_count",
        conv_id,
    )
    return count


async def mailbox_in_workspace(conn: Conn, workspace_id: str, mailbox_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM mailboxes WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL",
        workspace_id, mailbox_id,
    )
    return row


async def last_used_mailbox(conn: Conn, conv_id: str) -> str | None:
    """The mailbox of the conversation's newest outbound message, else the conversation's pin."""
    found: str | None = await conn.fetchval(
        "SELECT coalesce((SELECT m.mailbox_id FROM messages m WHERE m.conversation_id = $1"
        "   AND m.direction = 'outbound' AND m.mailbox_id IS NOT NULL"
        "   ORDER BY m.created_at DESC, m.id DESC LIMIT 1),"
        " (SELECT mailbox_id FROM conversations WHERE id = $1))",
        conv_id,
    )
    return found


async def any_active_pool_mailbox(conn: Conn, identity_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT mb.* FROM identity_mailboxes im JOIN mailboxes mb ON mb.id = im.mailbox_id"
        " WHERE im.identity_id = $1 AND mb.status = 'active' AND mb.deleted_at IS NULL"
        " ORDER BY (mb.health = 'healthy') DESC, im.position LIMIT 1",
        identity_id,
    )
    return row


async def insert_message(conn: asyncpg.Connection, fields: dict[str, Any]) -> None:
    columns = ", ".join(f'"{c}"' for c in fields)
    params = ", ".join(f"${i}" for i in range(1, len(fields) + 1))
    await conn.execute(f"INSERT INTO messages ({columns}) VALUES ({params})", *fields.values())


async def touch_activity(conn: asyncpg.Connection, conv_id: str) -> None:
    await conn.execute(
        "UPDATE conversations SET last_activity_at = now(), updated_at = now() WHERE id = $1", conv_id
    )


# --- attachments ------------------------------------------------------------------------

async def attachment_by_key(conn: Conn, workspace_id: str, key: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM attachments WHERE workspace_id = $1 AND key = $2", workspace_id, key
    )
    return row


async def insert_attachment(conn: Conn, fields: dict[str, Any]) -> None:
    columns = ", ".join(fields)
    params = ", ".join(f"${i}" for i in range(1, len(fields) + 1))
    await conn.execute(f"INSERT INTO attachments ({columns}) VALUES ({params})", *fields.values())


async def claim_upload(
    conn: asyncpg.Connection, att_id: str, message_id: str, conv_id: str, position: int,
    filename: str | None,
) -> bool:
    """Link a not-yet-used upload to a message; False when another message took it first."""
    done = await conn.fetchval(
        "UPDATE attachments SET message_id = $2, conversation_id = $3, position = $4,"
        " filename = coalesce($5, filename) WHERE id = $1 AND message_id IS NULL RETURNING id",
        att_id, message_id, conv_id, position, filename,
    )
    return done is not None


# --- scheduled replies --------------------------------------------------------------------

async def insert_scheduled_reply(
    conn: asyncpg.Connection, *, reply_id: str, workspace_id: str, conv_id: str, mailbox_id: str,
    payload: dict[str, Any], scheduled_for: datetime, status: str,
) -> asyncpg.Record:
    row: asyncpg.Record | None = await conn.fetchrow(
        "INSERT INTO scheduled_replies (id, workspace_id, conversation_id, mailbox_id, payload,"
        " scheduled_for, status) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
        reply_id, workspace_id, conv_id, mailbox_id, payload, scheduled_for, status,
    )
    assert row is not None
    return row


async def cancel_scheduled_reply(
    conn: Conn, workspace_id: str, conv_id: str, reply_id: str
) -> str | None:
    """None when it was pending and is now cancelled; otherwise its status ('missing': no such reply)."""
    row = await conn.fetchrow(
        "WITH target AS (SELECT id, status FROM scheduled_replies"
        "   WHERE id = $3 AND workspace_id = $1 AND conversation_id = $2),"
        " done AS (UPDATE scheduled_replies s SET status = 'cancelled', updated_at = now()"
        "   FROM target WHERE s.id = target.id AND s.status = 'pending' RETURNING s.id)"
        " SELECT target.status, (SELECT count(*) FROM done) AS cancelled FROM target",
        workspace_id, conv_id, reply_id,
    )
    if row is None:
        return "missing"
    return None if row["cancelled"] else str(row["status"])


async def reply_by_command(conn: Conn, conv_id: str, command_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM scheduled_replies WHERE conversation_id = $1 AND payload->>'commandId' = $2",
        conv_id, command_id,
    )
    return row


async def claim_due_reply(conn: asyncpg.Connection) -> asyncpg.Record | None:
    """One due pending reply, locked; concurrent schedulers skip it (SKIP LOCKED)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM scheduled_replies WHERE status = 'pending' AND scheduled_for <= now()"
        " ORDER BY scheduled_for, id LIMIT 1 FOR UPDATE SKIP LOCKED"
    )
    return row


async def set_reply_state(
    conn: Conn, reply_id: str, status: str, *, message_id: str | None = None, error: str | None = None
) -> None:
    await conn.execute(
        "UPDATE scheduled_replies SET status = $2, message_id = coalesce($3, message_id),"
        " error = $4, updated_at = now() WHERE id = $1",
        reply_id, status, message_id, error,
    )


# --- jobs ------------------------------------------------------------------------------

async def insert_job(
    conn: asyncpg.Connection, job_id: str, workspace_id: str, job_type: str, payload: dict[str, Any]
) -> None:
    await conn.execute(
        "INSERT INTO jobs (id, workspace_id, type, payload) VALUES ($1, $2, $3, $4)",
        job_id, workspace_id, job_type, payload,
    )


async def job_by_command(conn: Conn, conv_id: str, command_id: str) -> str | None:
    found: str | None = await conn.fetchval(
        "SELECT id FROM jobs WHERE payload->>'conversationId' = $1 AND payload->>'commandId' = $2",
        conv_id, command_id,
    )
    return found


async def get_job(conn: Conn, workspace_id: str, job_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM jobs WHERE workspace_id = $1 AND id = $2", workspace_id, job_id
    )
    return row
