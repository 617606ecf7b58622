"""Conversations written by sends, and the thread facts a reply by `convId` needs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import asyncpg

Tx = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


def lead_id(workspace_id: str, email: str) -> str:
    """A stable `lead_…` id per workspace and address (the inbox API's `lead._id`)."""
    digest = hashlib.sha256(f"{workspace_id}\x00{email.lower()}".encode()).hexdigest()[:16]
    return f"lead_{digest}"


@dataclass(frozen=True)
class Thread:
    """A conversation to reply on: recipient, subject, mailbox and its newest message's ids."""

    id: str
    lead_email: str
    subject: str
    mailbox_id: str | None
    parent_id: str | None  # rfc_message_id of the newest message (In-Reply-To)
    parent_references: list[str]
    parent_in_reply_to: str | None
    next_step: int


async def thread(conn: Tx, workspace_id: str, identity_id: str, conv_id: str) -> Thread | None:
    """None when the conversation is not this identity's (404 either way)."""
    row = await conn.fetchrow(
        "SELECT c.id, c.lead_email, c.subject, c.mailbox_id, m.rfc_message_id, m.\"references\","
        "  m.in_reply_to,"
        "  (SELECT COALESCE(max(sequence_step), 0) + 1 FROM messages s"
        "    WHERE s.conversation_id = c.id AND s.type = 'sent') AS next_step"
        " FROM conversations c"
        " LEFT JOIN LATERAL (SELECT rfc_message_id, \"references\", in_reply_to FROM messages"
        "   WHERE conversation_id = c.id ORDER BY created_at DESC, id DESC LIMIT 1) m ON true"
        " WHERE c.id = $1 AND c.workspace_id = $2 AND c.identity_id = $3",
        conv_id, workspace_id, identity_id,
    )
    if row is None:
        return None
    return Thread(
        row["id"], row["lead_email"], row["subject"], row["mailbox_id"], row["rfc_message_id"],
        list(row["references"] or []), row["in_reply_to"], row["next_step"],
    )
