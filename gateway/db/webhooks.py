"""Queries for webhook endpoints, their delivery attempts and the payloads they deliver."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from gateway.ids import new_id

Conn = asyncpg.Connection | asyncpg.Pool | PoolConnectionProxy
Tx = asyncpg.Connection | PoolConnectionProxy  # a connection, inside the caller's transaction

ENDPOINT_COLUMNS = (
    "id, workspace_id, url, events, description, enabled, disabled_reason, failing_since,"
    " created_at, updated_at"
)
DELIVERY_COLUMNS = (
    "id, endpoint_id, event_id, event_type, attempt, status, response_code, duration_ms,"
    " response_snippet, error, created_at, next_attempt_at"
)


def new_delivery_id() -> str:
    return new_id("dlv")


# --- endpoints (the admin API) -------------------------------------------------------------


async def create_endpoint(
    conn: Conn, *, workspace_id: str, url: str, events: list[str], description: str | None,
    enabled: bool, secret_enc: str,
) -> asyncpg.Record:
    row: asyncpg.Record | None = await conn.fetchrow(
        "INSERT INTO webhook_endpoints (id, workspace_id, url, events, description, enabled, secret)"
        f" VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {ENDPOINT_COLUMNS}",
        new_id("whk"), workspace_id, url, events, description, enabled, secret_enc,
    )
    assert row is not None
    return row


async def get_endpoint(conn: Conn, workspace_id: str, endpoint_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints"
        " WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL",
        endpoint_id, workspace_id,
    )
    return row


async def list_endpoints(
    conn: Conn, workspace_id: str, *, after: tuple[datetime, str] | None, limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints"
        " WHERE workspace_id = $1 AND deleted_at IS NULL"
        " AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))"
        " ORDER BY created_at, id LIMIT $4",
        workspace_id, after[0] if after else None, after[1] if after else "", limit,
    )
    return rows


_UPDATABLE = ("url", "events", "description", "enabled")


async def update_endpoint(
    conn: Conn, workspace_id: str, endpoint_id: str, changes: dict[str, Any]
) -> asyncpg.Record | None:
    """Apply the given fields; enabling an endpoint clears its failure record."""
    sets = ["updated_at = now()"]
    args: list[Any] = [endpoint_id, workspace_id]
    for name in _UPDATABLE:
        if name in changes:
            args.append(changes[name])
            sets.append(f"{name} = ${len(args)}")
    if changes.get("enabled") is True:
        sets += ["failing_since = NULL", "disabled_reason = NULL"]
    elif changes.get("enabled") is False:
        sets.append("disabled_reason = NULL")  # disabled by the user: no failure reason
    row: asyncpg.Record | None = await conn.fetchrow(
        f"UPDATE webhook_endpoints SET {', '.join(sets)}"
        " WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL"
        f" RETURNING {ENDPOINT_COLUMNS}",
        *args,
    )
    return row


async def delete_endpoint(conn: Conn, workspace_id: str, endpoint_id: str) -> bool:
    """Soft delete: the delivery log stays; pending attempts fail when they come due."""
    status: str = await conn.execute(
        "UPDATE webhook_endpoints SET deleted_at = now(), enabled = false, updated_at = now()"
        " WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL",
        endpoint_id, workspace_id,
    )
    return status.endswith(" 1")


async def rotate_secret(
    conn: Conn, workspace_id: str, endpoint_id: str, secret_enc: str, overlap_seconds: float
) -> bool:
    """The current secret stays valid (signed alongside the new one) for `overlap_seconds`."""
    status: str = await conn.execute(
        "UPDATE webhook_endpoints SET previous_secret = secret, secret = $3,"
        " previous_secret_until = now() + make_interval(secs => $4), updated_at = now()"
        " WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL",
        endpoint_id, workspace_id, secret_enc, overlap_seconds,
    )
    return status.endswith(" 1")


# --- the delivery log ------------------------------------------------------------------------


async def list_deliveries(
    conn: Conn, endpoint_id: str, *, before: tuple[datetime, str] | None, limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = $1"
        " AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))"
        " ORDER BY created_at DESC, id DESC LIMIT $4",
        endpoint_id, before[0] if before else None, before[1] if before else "", limit,
    )
    return rows


async def get_delivery(conn: Conn, endpoint_id: str, delivery_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1 AND endpoint_id = $2",
        delivery_id, endpoint_id,
    )
    return row


async def add_manual_attempt(conn: Tx, endpoint_id: str, event_id: str,
                             event_type: str) -> asyncpg.Record:
    """A replay: one more attempt of the event, due now (numbered after the last one)."""
    for _ in range(5):
        row: asyncpg.Record | None = await conn.fetchrow(
            "INSERT INTO webhook_deliveries"
            " (id, endpoint_id, event_id, event_type, attempt, status, next_attempt_at)"
            " SELECT $1, $2, $3, $4, COALESCE(max(attempt), 0) + 1, 'pending', now()"
            " FROM webhook_deliveries WHERE endpoint_id = $2 AND event_id = $3"
            " ON CONFLICT (endpoint_id, event_id, attempt) DO NOTHING"
            f" RETURNING {DELIVERY_COLUMNS}",
            new_delivery_id(), endpoint_id, event_id, event_type,
        )
        if row is not None:
            return row
    raise RuntimeError("could not number the replayed attempt")


async def payload_exists(conn: Conn, event_id: str) -> bool:
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM webhook_payloads WHERE event_id = $1)", event_id
    )
    return found


# --- the dispatcher ------------------------------------------------------------------------


_SIGNING = (
    "e.workspace_id, e.url, e.enabled AND e.deleted_at IS NULL AS usable, e.secret,"
    " CASE WHEN e.previous_secret_until > now() THEN e.previous_secret END AS previous_secret"
)


async def targets(conn: Conn, workspace_ids: list[str], test_ids: list[str]) -> list[asyncpg.Record]:
    """Enabled endpoints of these workspaces, and the endpoints named by test events."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT e.id, e.events, {_SIGNING} FROM webhook_endpoints e"
        " WHERE e.deleted_at IS NULL AND ((e.workspace_id = ANY($1::text[]) AND e.enabled)"
        "  OR e.id = ANY($2::text[]))",
        workspace_ids, test_ids,
    )
    return rows


async def insert_first_attempts(
    conn: Conn, payloads: list[tuple[str, str, str, bytes]], rows: list[tuple[str, str, str, float | None]]
) -> list[asyncpg.Record]:
    """Store the events' bodies and attempt 1 for each target, in one atomic statement.

    `payloads`: (event id, workspace id, event type, body), the first body stored for an event
    wins. `rows`: (endpoint id, event id, event type, lease), pending; a row with a lease is
    born claimed by the caller (due again only after the lease), without one it is due now,
    for the claim loop. Idempotent for redelivered events: rows that existed are not returned.
    """
    result: list[asyncpg.Record] = await conn.fetch(
        "WITH p AS (INSERT INTO webhook_payloads (event_id, workspace_id, event_type, body)"
        "  SELECT * FROM unnest($6::text[], $7::text[], $8::text[], $9::bytea[])"
        "  ON CONFLICT (event_id) DO NOTHING)"
        " INSERT INTO webhook_deliveries"
        " (id, endpoint_id, event_id, event_type, attempt, status, next_attempt_at)"
        " SELECT i, e, v, t, 1, 'pending', now() + make_interval(secs => COALESCE(l, 0))"
        " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[]) AS r(i, e, v, t, l)"
        " ON CONFLICT (endpoint_id, event_id, attempt) DO NOTHING"
        " RETURNING id, endpoint_id, event_id, event_type, attempt, next_attempt_at",
        [new_delivery_id() for _ in rows], [r[0] for r in rows], [r[1] for r in rows],
        [r[2] for r in rows], [r[3] for r in rows],
        [p[0] for p in payloads], [p[1] for p in payloads], [p[2] for p in payloads],
        [p[3] for p in payloads],
    )
    return result


_CLAIM_SELECT = (
    " SELECT cl.id, cl.endpoint_id, cl.event_id, cl.event_type, cl.attempt, cl.next_attempt_at,"
    f" cl.start_now, cl.lease, {_SIGNING}, p.body"
    " FROM claimed cl JOIN webhook_endpoints e ON e.id = cl.endpoint_id"
    " LEFT JOIN webhook_payloads p ON p.event_id = cl.event_id"
)


async def claim_due(
    conn: Conn, *, plan: list[tuple[str, int, int]], skip: list[str], limit: int,
    per_endpoint: int, queue_limit: int, base_lease: float, post_seconds: float, max_rounds: int,
) -> list[asyncpg.Record]:
    """Claim due attempts (SKIP LOCKED): per endpoint, its free slots plus its queue room.

    `plan` gives (endpoint, free slots, queued) for endpoints the caller has work for; others
    have `per_endpoint` free slots and an empty queue. Claiming pushes `next_attempt_at` out
    by a lease — longer for rows that will wait in the queue, by the POSTs ahead of them (at
    most `max_rounds` of them) — so a dispatcher that dies leaves the rows pending and due
    again once the lease expires. The new `next_attempt_at` is the claim's token when
    recording the outcome; `lease` is its length in seconds. `start_now` tells rows for a
    free slot from rows for the queue.
    """
    rows: list[asyncpg.Record] = await conn.fetch(
        "WITH plan AS (SELECT * FROM unnest($1::text[], $2::int[], $3::int[]) AS p(eid, free, queued)),"
        " cand AS ("
        "  SELECT id, endpoint_id, next_attempt_at FROM webhook_deliveries"
        "  WHERE status = 'pending' AND next_attempt_at <= now()"
        "    AND NOT (endpoint_id = ANY($4::text[]))"
        "  ORDER BY next_attempt_at LIMIT $5 FOR UPDATE SKIP LOCKED"
        "), ranked AS ("
        "  SELECT c.id, c.next_attempt_at, COALESCE(p.free, $6) AS free, COALESCE(p.queued, 0) AS queued,"
        "   row_number() OVER (PARTITION BY c.endpoint_id ORDER BY c.next_attempt_at, c.id) AS rn"
        "  FROM cand c LEFT JOIN plan p ON p.eid = c.endpoint_id"
        "), chosen AS ("
        "  SELECT id, rn <= free AS start_now, CASE WHEN rn <= free THEN $8::float8"
        "   ELSE $8 + LEAST((queued + rn - free - 1) / $6 + 1, $11) * $9::float8 END AS lease"
        "  FROM ranked WHERE rn <= free + ($7 - queued)"
        "  ORDER BY rn <= free DESC, next_attempt_at, id LIMIT $10"
        "), claimed AS ("
        "  UPDATE webhook_deliveries d SET next_attempt_at = now() + make_interval(secs => chosen.lease)"
        "  FROM chosen WHERE d.id = chosen.id"
        "  RETURNING d.id, d.endpoint_id, d.event_id, d.event_type, d.attempt, d.next_attempt_at,"
        "   chosen.start_now, chosen.lease"
        ")" + _CLAIM_SELECT + " ORDER BY cl.next_attempt_at, cl.id",
        [p[0] for p in plan], [p[1] for p in plan], [p[2] for p in plan], skip, limit * 2,
        per_endpoint, queue_limit, base_lease, post_seconds, limit, max_rounds,
    )
    return rows


async def record_successes(conn: Conn, done: list[tuple[str, datetime, int | None, int, str]]) -> set[str]:
    """(delivery id, claim token, code, duration ms, snippet) each: mark them succeeded and end
    their endpoints' failure streaks, in one statement. Returns the ids recorded.

    Committed without waiting for the WAL flush: should PostgreSQL crash in that instant the
    attempts are pending again and are re-sent with the same webhook-id (at least once).
    """
    rows = await conn.fetch(
        "WITH cfg AS (SELECT set_config('synchronous_commit', 'off', true)),"
        " s AS (SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::int[], $4::int[],"
        "  $5::text[]) AS s(id, token, code, ms, snippet)),"
        " d AS (UPDATE webhook_deliveries w SET status = 'succeeded', response_code = s.code,"
        "  duration_ms = s.ms, response_snippet = s.snippet, error = NULL, next_attempt_at = NULL"
        "  FROM s WHERE w.id = s.id AND w.status = 'pending' AND w.next_attempt_at = s.token"
        "  RETURNING w.id, w.endpoint_id),"
        " e AS (UPDATE webhook_endpoints SET failing_since = NULL"
        "  WHERE id IN (SELECT endpoint_id FROM d) AND failing_since IS NOT NULL)"
        " SELECT d.id FROM d, cfg",
        [x[0] for x in done], [x[1] for x in done], [x[2] for x in done], [x[3] for x in done],
        [x[4] for x in done],
    )
    return {r["id"] for r in rows}


async def record_failure(
    conn: Tx, *, delivery_id: str, token: datetime, code: int | None,
    duration_ms: int | None, snippet: str | None, error: str, retry_in: float | None,
) -> bool:
    """Mark the attempt failed; with `retry_in`, schedule the next attempt (caller's transaction)."""
    row = await conn.fetchrow(
        "UPDATE webhook_deliveries SET status = 'failed', response_code = $3, duration_ms = $4,"
        " response_snippet = $5, error = $6,"
        " next_attempt_at = now() + make_interval(secs => $7)"
        " WHERE id = $1 AND status = 'pending' AND next_attempt_at = $2"
        " RETURNING endpoint_id, event_id, event_type, attempt, next_attempt_at",
        delivery_id, token, code, duration_ms, snippet, error[:2000], retry_in,
    )
    if row is None:
        return False
    if retry_in is not None:
        await conn.execute(
            "INSERT INTO webhook_deliveries"
            " (id, endpoint_id, event_id, event_type, attempt, status, next_attempt_at)"
            " VALUES ($1, $2, $3, $4, $5, 'pending', $6)"
            " ON CONFLICT (endpoint_id, event_id, attempt) DO NOTHING",
            new_delivery_id(), row["endpoint_id"], row["event_id"], row["event_type"],
            row["attempt"] + 1, row["next_attempt_at"],
        )
    return True


async def mark_failing(conn: Tx, endpoint_id: str) -> float:
    """Start (or continue) the endpoint's failure streak; returns its length in seconds."""
    seconds: float | None = await conn.fetchval(
        "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, now())"
        " WHERE id = $1 RETURNING EXTRACT(EPOCH FROM now() - failing_since)::float8",
        endpoint_id,
    )
    return seconds or 0.0


async def disable_endpoint(conn: Tx, endpoint_id: str, reason: str) -> asyncpg.Record | None:
    """Disable an enabled endpoint; None when it already was (someone else recorded it)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, updated_at = now()"
        " WHERE id = $1 AND enabled AND deleted_at IS NULL RETURNING id, workspace_id, url",
        endpoint_id, reason,
    )
    return row
