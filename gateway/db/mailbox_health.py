"""Mailbox health: consecutive failures take a mailbox out of rotation, a success brings it back.

Both functions run inside the caller's transaction and stage `mailbox.unhealthy` /
`mailbox.recovered` only on the transition, so the events fire once per change.
"""

from __future__ import annotations

import asyncpg

from gateway import events


def _data(row: asyncpg.Record, reason: str) -> dict[str, object]:
    return {
        "conversationId": None,
        "identity": None,
        "mailbox": {"id": row["id"], "email": row["email"]},
        "reason": reason,
    }


async def record_failure(
    conn: asyncpg.Connection, mailbox_id: str, error: str, threshold: int
) -> int | None:
    """Count a failure; returns the outbox id of `mailbox.unhealthy` if this made it unhealthy."""
    row = await conn.fetchrow(
        "UPDATE mailboxes SET consecutive_failures = consecutive_failures + 1, last_error = $2,"
        " health = CASE WHEN consecutive_failures + 1 >= $3 THEN 'unhealthy' ELSE health END,"
        " updated_at = now()"
        " WHERE id = $1"
        " RETURNING id, workspace_id, email, health,"
        "  (health = 'unhealthy' AND consecutive_failures = $3) AS tipped",
        mailbox_id, error[:1000], threshold,
    )
    if row is None or not row["tipped"]:
        return None
    _, outbox_id = await events.stage(conn, "mailbox.unhealthy", row["workspace_id"], _data(row, error))
    return outbox_id


async def record_success(conn: asyncpg.Connection, mailbox_id: str) -> int | None:
    """Reset the failure count; returns the outbox id of `mailbox.recovered` on recovery."""
    row = await conn.fetchrow(
        "UPDATE mailboxes m SET consecutive_failures = 0, health = 'healthy', updated_at = now()"
        " FROM (SELECT id, health AS was FROM mailboxes WHERE id = $1 FOR UPDATE) old"
        " WHERE m.id = old.id AND (m.consecutive_failures <> 0 OR m.health <> 'healthy')"
        " RETURNING m.id, m.workspace_id, m.email, old.was",
        mailbox_id,
    )
    if row is None or row["was"] != "unhealthy":
        return None
    _, outbox_id = await events.stage(
        conn, "mailbox.recovered", row["workspace_id"], _data(row, "delivery succeeded")
    )
    return outbox_id
