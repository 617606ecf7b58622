"""Read-only look-ups of ingestion: Message-IDs handled before, copies of our own mail,
threading candidates, attachment numbering and the sends a bounce names."""

from __future__ import annotations

import asyncpg

# --- handled before, our own mail ---------------------------------------------------------


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
    """Those of these Message-IDs that name mail the gateway sent (copies of our own outbound)."""
    if not rfc_message_ids:
        return set()
    rows = await conn.fetch(
        "SELECT DISTINCT rfc_message_id FROM messages WHERE workspace_id = $1"
        " AND rfc_message_id = ANY($2::text[]) AND direction = 'outbound'",
        workspace_id, rfc_message_ids,
    )
    return {r["rfc_message_id"] for r in rows}


# --- threading ----------------------------------------------------------------------------


async def thread_candidates_by_ids(
    conn: asyncpg.Connection, workspace_id: str, mailbox_id: str, ids: list[str]
) -> dict[str, asyncpg.Record]:
    """Per Message-ID, the message threading prefers for it (this mailbox's
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
    """Every conversation of these senders as leads, for threading by sender (`lead_key` is the
    lower-cased lead address); the caller picks the most recent (this mailbox's first)."""
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


# --- attachment numbering -----------------------------------------------------------------


async def attachment_counts(conn: asyncpg.Connection, conversation_ids: list[str]) -> dict[str, int]:
    if not conversation_ids:
        return {}
    rows = await conn.fetch(
        "SELECT conversation_id, count(*) AS n FROM attachments WHERE conversation_id = ANY($1::text[])"
        " GROUP BY conversation_id",
        conversation_ids,
    )
    return {r["conversation_id"]: int(r["n"]) for r in rows}


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
