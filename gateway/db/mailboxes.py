"""Queries for mailboxes: the SMTP/IMAP accounts an identity sends from (soft-deleted)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import asyncpg

from gateway.ids import new_id

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy | asyncpg.Pool
Tx = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

# Columns the API shows; password columns are never selected here.
_VIEW = (
    "m.id, m.workspace_id, m.email, m.from_name, m.smtp, m.imap, m.daily_cap, m.status,"
    " m.health, m.last_error, m.consecutive_failures, m.sent_total, m.bounced_total,"
    " m.created_at, m.updated_at,"
    " COALESCE((SELECT u.used FROM daily_usage u WHERE u.subject_id = m.id AND u.day = $1), 0)"
    " AS sent_today"
)


class DuplicateEmail(Exception):
    """Another live mailbox of the workspace has this address."""


async def create(
    conn: Conn,
    *,
    workspace_id: str,
    email: str,
    from_name: str | None,
    smtp: dict[str, Any],
    smtp_password_enc: str,
    imap: dict[str, Any] | None,
    imap_password_enc: str | None,
    daily_cap: int,
    status: str,
    today: date,
) -> asyncpg.Record:
    mbx_id = new_id("mbx")
    try:
        await conn.execute(
            "INSERT INTO mailboxes (id, workspace_id, email, from_name, smtp, smtp_password_enc,"
            " imap, imap_password_enc, daily_cap, status)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            mbx_id, workspace_id, email, from_name, smtp, smtp_password_enc,
            imap, imap_password_enc, daily_cap, status,
        )
    except asyncpg.UniqueViolationError:
        raise DuplicateEmail(email) from None
    row = await get(conn, workspace_id, mbx_id, today)
    assert row is not None
    return row


async def get(conn: Conn, workspace_id: str, mailbox_id: str, today: date) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_VIEW} FROM mailboxes m"
        " WHERE m.id = $2 AND m.workspace_id = $3 AND m.deleted_at IS NULL",
        today, mailbox_id, workspace_id,
    )
    return row


async def list_page(
    conn: Conn, workspace_id: str, *, after: tuple[datetime, str] | None, limit: int, today: date
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {_VIEW} FROM mailboxes m"
        " WHERE m.workspace_id = $2 AND m.deleted_at IS NULL"
        " AND ($3::timestamptz IS NULL OR (m.created_at, m.id) > ($3, $4))"
        " ORDER BY m.created_at, m.id LIMIT $5",
        today, workspace_id, after[0] if after else None, after[1] if after else "", limit,
    )
    return rows


async def secrets_of(conn: Conn, workspace_id: str, mailbox_id: str) -> asyncpg.Record | None:
    """The stored (encrypted) passwords and settings, for merging a partial update."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT email, smtp, smtp_password_enc, imap, imap_password_enc FROM mailboxes"
        " WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL",
        mailbox_id, workspace_id,
    )
    return row


async def update(
    conn: Conn, workspace_id: str, mailbox_id: str, changes: dict[str, Any], today: date
) -> asyncpg.Record | None:
    """Set the given columns (names are code-chosen, never user input); None if not found."""
    allowed = {"email", "from_name", "smtp", "smtp_password_enc", "imap", "imap_password_enc",
               "daily_cap", "status"}
    assert set(changes) <= allowed
    if changes:
        names = list(changes)
        sets = ", ".join(f"{n} = ${i + 3}" for i, n in enumerate(names))
        try:
            status: str = await conn.execute(
                f"UPDATE mailboxes SET {sets}, updated_at = now()"
                " WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL",
                mailbox_id, workspace_id, *(changes[n] for n in names),
            )
        except asyncpg.UniqueViolationError:
            raise DuplicateEmail(str(changes.get("email"))) from None
        if status.endswith(" 0"):
            return None
    return await get(conn, workspace_id, mailbox_id, today)


async def soft_delete(pool: asyncpg.Pool, workspace_id: str, mailbox_id: str) -> bool:
    """Mark deleted and take it out of every identity's pool, in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        status: str = await conn.execute(
            "UPDATE mailboxes SET deleted_at = now(), updated_at = now()"
            " WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL",
            mailbox_id, workspace_id,
        )
        if status.endswith(" 0"):
            return False
        await conn.execute("DELETE FROM identity_mailboxes WHERE mailbox_id = $1", mailbox_id)
    return True


async def lock_live(conn: Tx, workspace_id: str, mailbox_ids: list[str]) -> set[str]:
    """Of `mailbox_ids`, those live in the workspace, share-locked until the transaction ends
    (so a concurrent delete waits, then removes them from the pool it just joined)."""
    rows = await conn.fetch(
        "SELECT id FROM mailboxes WHERE id = ANY($1::text[]) AND workspace_id = $2"
        " AND deleted_at IS NULL FOR SHARE",
        mailbox_ids, workspace_id,
    )
    return {r["id"] for r in rows}
