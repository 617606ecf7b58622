"""Idempotency keys (table `idempotency_keys`): API claims and the router's final record.

See `gateway.send.idempotency` for how the two sides use these statements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

TTL = "24 hours"


@dataclass(frozen=True)
class KeyRow:
    state: str  # processing | done
    request_hash: str
    response_status: int | None
    response_body: Any


def _row(r: asyncpg.Record | None) -> KeyRow | None:
    if r is None:
        return None
    return KeyRow(r["state"], r["request_hash"], r["response_status"], r["response_body"])


async def claim_by_handle(
    pool: asyncpg.Pool, workspace_id: str, handle: str, key: str, request_hash: str,
    stale_seconds: float,
) -> tuple[str | None, bool, KeyRow | None]:
    """API side: take the key for a new attempt when it is absent, expired, or a stale claim
    (older than `stale_seconds`) with the same body; the identity is resolved in the same
    statement, so this is one round trip.

    Returns (identity id or None when there is no such identity, claimed, the row as it
    was before this statement when not claimed).
    """
    row = await pool.fetchrow(
        "WITH i AS (SELECT id FROM identities WHERE workspace_id = $1 AND lower(handle) = lower($2)"
        "   AND deleted_at IS NULL),"
        " c AS (INSERT INTO idempotency_keys AS k (scope, key, request_hash, state, expires_at)"
        f"   SELECT i.id, $3, $4, 'processing', now() + interval '{TTL}' FROM i"
        "   ON CONFLICT (scope, key) DO UPDATE SET request_hash = EXCLUDED.request_hash,"
        "     state = 'processing', response_status = NULL, response_body = NULL,"
        "     created_at = now(), expires_at = EXCLUDED.expires_at"
        "   WHERE k.expires_at <= now()"
        "      OR (k.state = 'processing' AND k.request_hash = EXCLUDED.request_hash"
        "          AND k.created_at < now() - make_interval(secs => $5))"
        "   RETURNING 1)"
        " SELECT i.id AS scope, EXISTS (SELECT 1 FROM c) AS claimed, k.state, k.request_hash,"
        "   k.response_status, k.response_body"
        " FROM i LEFT JOIN idempotency_keys k ON k.scope = i.id AND k.key = $3 AND k.expires_at > now()",
        workspace_id, handle, key, request_hash, stale_seconds,
    )
    if row is None:
        return None, False, None
    if row["claimed"]:
        return row["scope"], True, None
    existing = _row(row) if row["state"] is not None else None
    return row["scope"], False, existing


async def get(conn: asyncpg.Connection | asyncpg.Pool, scope: str, key: str) -> KeyRow | None:
    return _row(await conn.fetchrow(
        "SELECT state, request_hash, response_status, response_body FROM idempotency_keys"
        " WHERE scope = $1 AND key = $2 AND expires_at > now()",
        scope, key,
    ))


async def release(conn: asyncpg.Connection | asyncpg.Pool, scope: str, key: str) -> None:
    """Drop an unfinished claim (the attempt failed or timed out): a retry may go ahead."""
    await conn.execute(
        "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND state = 'processing'",
        scope, key,
    )


async def purge_expired(conn: asyncpg.Connection | asyncpg.Pool, limit: int = 10_000) -> int:
    result: str = await conn.execute(
        "DELETE FROM idempotency_keys WHERE ctid IN (SELECT ctid FROM idempotency_keys"
        " WHERE expires_at <= now() LIMIT $1)",
        limit,
    )
    return int(result.rsplit(" ", 1)[-1])
