"""Read-only look-ups of ingestion: Message-IDs handled before, copies of our own mail,
threading candidates, attachment numbering and the sends a bounce names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

# --- one round trip per batch --------------------------------------------------------------


@dataclass(frozen=True)
class BatchLookups:
    mailbox_email: str | None  # for event data
    seen: set[str]  # Message-IDs this mailbox handled before
    own: set[str]  # Message-IDs of mail the gateway sent (copies of our own outbound)
    by_id: dict[str, Mapping[str, Any]]  # threading candidate per referenced Message-ID


# Per referenced Message-ID, the message threading prefers for it (this mailbox's conversations
# first, then the newest), with its conversation, metadata and identity handle; the caller
# picks among a message's references (earliest in its list wins).
_CANDIDATES = (
    "SELECT DISTINCT ON (m.rfc_message_id) m.rfc_message_id, c.id, c.lead_email, c.mailbox_id,"
    "  c.metadata AS conv_metadata, m.metadata, i.handle"
    " FROM messages m JOIN conversations c ON c.id = m.conversation_id"
    " LEFT JOIN identities i ON i.id = c.identity_id"
    " WHERE m.workspace_id = $2 AND m.rfc_message_id = ANY($5::text[])"
    " ORDER BY m.rfc_message_id, (c.mailbox_id = $1) IS TRUE DESC, m.created_at DESC"
)


async def batch_lookups(
    conn: asyncpg.Connection, mailbox_id: str, workspace_id: str, rfc_message_ids: list[str],
    mail_ids: list[str], refs: list[str],
) -> BatchLookups:
    """Everything a batch needs to know before deciding its messages, in one statement (each
    round trip of the batch transaction waits for the event loop as well as the database):
    which of `rfc_message_ids` were handled before, which of `mail_ids` are our own outbound
    mail, and the threading candidates for the Message-IDs in `refs`."""
    row = await conn.fetchrow(
        "SELECT (SELECT email FROM mailboxes WHERE id = $1) AS email,"
        " ARRAY(SELECT rfc_message_id FROM inbound_seen"
        "       WHERE mailbox_id = $1 AND rfc_message_id = ANY($3::text[])) AS seen,"
        " ARRAY(SELECT DISTINCT rfc_message_id FROM messages WHERE workspace_id = $2"
        "       AND rfc_message_id = ANY($4::text[]) AND direction = 'outbound') AS own,"
        f" (SELECT jsonb_agg(to_jsonb(t)) FROM ({_CANDIDATES}) t) AS candidates",
        mailbox_id, workspace_id, rfc_message_ids, mail_ids, refs,
    )
    assert row is not None  # a SELECT without FROM always has its one row
    by_id = {r["rfc_message_id"]: r for r in row["candidates"] or ()}
    return BatchLookups(row["email"], set(row["seen"] or ()), set(row["own"] or ()), by_id)


# --- threading ----------------------------------------------------------------------------


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
