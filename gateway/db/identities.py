"""Queries for identities (sending personas, addressed by handle) and their mailbox pools."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from gateway.db import mailboxes
from gateway.ids import new_id

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy | asyncpg.Pool
Tx = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

_VIEW = (
    "i.id, i.workspace_id, i.handle, i.display_name, i.daily_cap, i.timezone,"
    " i.created_at, i.updated_at,"
    " COALESCE((SELECT array_agg(p.mailbox_id ORDER BY p.position) FROM identity_mailboxes p"
    "  WHERE p.identity_id = i.id), '{}') AS mailbox_ids"
)


class DuplicateHandle(Exception):
    """Another live identity of the workspace has this handle."""


class UnknownMailboxes(Exception):
    """Some pool entries are not live mailboxes of the workspace; `indexes` says which."""

    def __init__(self, indexes: list[int]) -> None:
        super().__init__(indexes)
        self.indexes = indexes


async def _set_pool(
    conn: Tx, workspace_id: str, identity_id: str, mailbox_ids: list[str]
) -> None:
    live = await mailboxes.lock_live(conn, workspace_id, mailbox_ids)
    missing = [i for i, m in enumerate(mailbox_ids) if m not in live]
    if missing:
        raise UnknownMailboxes(missing)
    await conn.execute("DELETE FROM identity_mailboxes WHERE identity_id = $1", identity_id)
    await conn.executemany(
        "INSERT INTO identity_mailboxes (identity_id, mailbox_id, position) VALUES ($1, $2, $3)",
        [(identity_id, m, i) for i, m in enumerate(mailbox_ids)],
    )


async def create(
    pool: asyncpg.Pool,
    *,
    workspace_id: str,
    handle: str,
    display_name: str | None,
    daily_cap: int,
    timezone: str,
    mailbox_ids: list[str],
) -> asyncpg.Record:
    idn_id = new_id("idn")
    async with pool.acquire() as conn, conn.transaction():
        try:
            await conn.execute(
                "INSERT INTO identities (id, workspace_id, handle, display_name, daily_cap, timezone)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                idn_id, workspace_id, handle, display_name, daily_cap, timezone,
            )
        except asyncpg.UniqueViolationError:
            raise DuplicateHandle(handle) from None
        await _set_pool(conn, workspace_id, idn_id, mailbox_ids)
        row = await _by_id(conn, idn_id)
    assert row is not None
    return row


async def _by_id(conn: Conn, identity_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_VIEW} FROM identities i WHERE i.id = $1 AND i.deleted_at IS NULL", identity_id
    )
    return row


async def by_handle(conn: Conn, workspace_id: str, handle: str) -> asyncpg.Record | None:
    """Handles compare case-insensitively (as the unique index does)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_VIEW} FROM identities i"
        " WHERE i.workspace_id = $1 AND lower(i.handle) = lower($2) AND i.deleted_at IS NULL",
        workspace_id, handle,
    )
    return row


async def list_page(
    conn: Conn, workspace_id: str, *, after: tuple[datetime, str] | None, limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {_VIEW} FROM identities i"
        " WHERE i.workspace_id = $1 AND i.deleted_at IS NULL"
        " AND ($2::timestamptz IS NULL OR (i.created_at, i.id) > ($2, $3))"
        " ORDER BY i.created_at, i.id LIMIT $4",
        workspace_id, after[0] if after else None, after[1] if after else "", limit,
    )
    return rows


async def update(
    pool: asyncpg.Pool,
    workspace_id: str,
    handle: str,
    changes: dict[str, Any],
    mailbox_ids: list[str] | None,
) -> asyncpg.Record | None:
    """Apply column changes (code-chosen names) and, if given, replace the pool; None if not found."""
    allowed = {"handle", "display_name", "daily_cap", "timezone"}
    assert set(changes) <= allowed
    names = list(changes)
    sets = "".join(f", {n} = ${i + 3}" for i, n in enumerate(names))
    async with pool.acquire() as conn, conn.transaction():
        try:
            idn_id: str | None = await conn.fetchval(
                f"UPDATE identities SET updated_at = now(){sets}"
                " WHERE workspace_id = $1 AND lower(handle) = lower($2) AND deleted_at IS NULL"
                " RETURNING id",
                workspace_id, handle, *(changes[n] for n in names),
            )
        except asyncpg.UniqueViolationError:
            raise DuplicateHandle(str(changes.get("handle"))) from None
        if idn_id is None:
            return None
        if mailbox_ids is not None:
            await _set_pool(conn, workspace_id, idn_id, mailbox_ids)
        return await _by_id(conn, idn_id)


async def soft_delete(conn: Conn, workspace_id: str, handle: str) -> bool:
    status: str = await conn.execute(
        "UPDATE identities SET deleted_at = now(), updated_at = now()"
        " WHERE workspace_id = $1 AND lower(handle) = lower($2) AND deleted_at IS NULL",
        workspace_id, handle,
    )
    return status.endswith(" 1")
