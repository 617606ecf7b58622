"""Queries for operators, workspaces and API keys."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from gateway import keys
from gateway.ids import new_id


async def create_operator(conn: asyncpg.Connection | asyncpg.Pool) -> str:
    op_id = new_id("op")
    await conn.execute("INSERT INTO operators (id) VALUES ($1)", op_id)
    return op_id


async def any_platform_key(conn: asyncpg.Connection | asyncpg.Pool) -> bool:
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM api_keys WHERE kind = 'platform' AND revoked_at IS NULL)"
    )
    return found


async def insert_key(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    kind: str,
    operator_id: str,
    workspace_id: str | None,
    name: str | None,
) -> tuple[str, asyncpg.Record]:
    """Create a key; returns (the key in clear — shown once, never stored —, its row)."""
    for _ in range(5):
        key = keys.generate(kind)
        row = await conn.fetchrow(
            "INSERT INTO api_keys (prefix, key_hash, kind, operator_id, workspace_id, name)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (prefix) DO NOTHING"
            " RETURNING prefix, name, created_at, workspace_id",
            keys.public_prefix(key),
            keys.digest(key),
            kind,
            operator_id,
            workspace_id,
            name,
        )
        if row is not None:
            return key, row
    raise RuntimeError("could not allocate a unique key prefix")


async def key_by_prefix(conn: asyncpg.Connection | asyncpg.Pool, prefix: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT prefix, key_hash, kind, operator_id, workspace_id, revoked_at"
        " FROM api_keys WHERE prefix = $1",
        prefix,
    )
    return row


async def list_keys(
    conn: asyncpg.Connection | asyncpg.Pool,
    workspace_id: str,
    *,
    after: tuple[datetime, str] | None = None,
    limit: int = 100,
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT prefix, name, created_at FROM api_keys"
        " WHERE workspace_id = $1 AND revoked_at IS NULL"
        " AND ($2::timestamptz IS NULL OR (created_at, prefix) > ($2, $3))"
        " ORDER BY created_at, prefix LIMIT $4",
        workspace_id,
        after[0] if after else None,
        after[1] if after else "",
        limit,
    )
    return rows


async def revoke_key(conn: asyncpg.Connection | asyncpg.Pool, prefix: str) -> bool:
    status: str = await conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE prefix = $1 AND revoked_at IS NULL", prefix
    )
    return status.endswith(" 1")


async def create_workspace(
    conn: asyncpg.Connection | asyncpg.Pool, operator_id: str, name: str
) -> asyncpg.Record:
    row: asyncpg.Record | None = await conn.fetchrow(
        "INSERT INTO workspaces (id, operator_id, name) VALUES ($1, $2, $3)"
        " RETURNING id, name, created_at",
        new_id("ws"),
        operator_id,
        name,
    )
    assert row is not None
    return row


async def get_workspace(
    conn: asyncpg.Connection | asyncpg.Pool, workspace_id: str, operator_id: str
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT id, name, created_at FROM workspaces WHERE id = $1 AND operator_id = $2",
        workspace_id,
        operator_id,
    )
    return row


async def list_workspaces(
    conn: asyncpg.Connection | asyncpg.Pool,
    operator_id: str,
    *,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT id, name, created_at FROM workspaces WHERE operator_id = $1"
        " AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))"
        " ORDER BY created_at, id LIMIT $4",
        operator_id,
        after[0] if after else None,
        after[1] if after else "",
        limit,
    )
    return rows
