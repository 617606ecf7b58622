"""The one event model (webhooks and AMQP subscribers), staged through the outbox."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from gateway import outbox
from gateway.bus.topology import EVENTS
from gateway.ids import new_id
from gateway.timefmt import iso, now


def make_event(event_type: str, workspace_id: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": new_id("evt"),
        "type": event_type,
        "createdAt": iso(now()),
        "workspaceId": workspace_id,
        "data": data,
    }


async def stage(
    conn: asyncpg.Connection, event_type: str, workspace_id: str, data: dict[str, Any]
) -> tuple[dict[str, Any], int]:
    """Record the event and its outbox row in the caller's transaction.

    Returns the event and the outbox id to hand to `outbox.publish_rows` after commit.
    """
    event = make_event(event_type, workspace_id, data)
    await conn.execute(
        "INSERT INTO events (id, workspace_id, type, data) VALUES ($1, $2, $3, $4)",
        event["id"],
        workspace_id,
        event_type,
        data,
    )
    row_id = await outbox.stage(
        conn, EVENTS, event_type, orjson.dumps(event), message_id=event["id"]
    )
    return event, row_id


async def message_event_data(conn: asyncpg.Connection, message_id: str) -> dict[str, Any]:
    """The `data` every event about one message carries (SPEC "Events")."""
    row = await conn.fetchrow(
        "SELECT m.id, m.rfc_message_id, m.from_email, m.to_emails, m.subject, m.metadata,"
        "       m.conversation_id, m.mailbox_id, i.handle, mb.email AS mailbox_email"
        " FROM messages m JOIN conversations c ON c.id = m.conversation_id"
        " JOIN identities i ON i.id = c.identity_id"
        " LEFT JOIN mailboxes mb ON mb.id = COALESCE(m.mailbox_id, c.mailbox_id)"
        " WHERE m.id = $1",
        message_id,
    )
    if row is None:
        raise LookupError(f"message {message_id} not found")
    return message_data(row)


def message_data(row: asyncpg.Record) -> dict[str, Any]:
    """`message_event_data` from a row that already has the message's columns, its
    conversation's identity `handle` and its `mailbox_email` (no extra query)."""
    return {
        "conversationId": row["conversation_id"],
        "identity": row["handle"],
        "mailbox": {"id": row["mailbox_id"], "email": row["mailbox_email"]},
        "messageId": row["id"],
        "rfcMessageId": row["rfc_message_id"],
        "to": row["to_emails"][0] if row["to_emails"] else None,
        "from": row["from_email"],
        "subject": row["subject"],
        "metadata": row["metadata"] or {},
    }
