"""Queries for the workspace's do-not-send list (addresses stored with a lower-cased domain)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

Conn = asyncpg.Connection | asyncpg.Pool


async def add(conn: Conn, workspace_id: str, email: str, reason: str) -> tuple[asyncpg.Record, bool]:
    """Insert or, if present, set the reason; returns (row, created)."""
    row = await conn.fetchrow(
        "INSERT INTO suppressions AS s (workspace_id, email, reason) VALUES ($1, $2, $3)"
        " ON CONFLICT (workspace_id, email) DO UPDATE SET reason = EXCLUDED.reason"
        " RETURNING s.email, s.reason, s.created_at, (xmax = 0) AS created",
        workspace_id, email, reason,
    )
    assert row is not None
    return row, bool(row["created"])


async def is_suppressed(conn: Conn, workspace_id: str, email: str) -> bool:
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM suppressions WHERE workspace_id = $1 AND email = $2)",
        workspace_id, email,
    )
    return found


async def list_page(
    conn: Conn, workspace_id: str, *, after: tuple[datetime, str] | None, limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT email, reason, created_at, email AS id FROM suppressions WHERE workspace_id = $1"
        " AND ($2::timestamptz IS NULL OR (created_at, email) > ($2, $3))"
        " ORDER BY created_at, email LIMIT $4",
        workspace_id, after[0] if after else None, after[1] if after else "", limit,
    )
    return rows


async def remove(conn: Conn, workspace_id: str, email: str) -> bool:
    status: str = await conn.execute(
        "DELETE FROM suppressions WHERE workspace_id = $1 AND email = $2", workspace_id, email
    )
    return status.endswith(" 1")
