"""Sender pools and recipient affinity: an identity with its mailboxes, lead → mailbox pins,
and the workspace's suppressions of the leads, read in one round trip — together with the
check of an API key the API did not look up itself (`KeyCheck`, see `gateway.api.auth`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from gateway.errors import NotFound, Unauthorized
from gateway.keys import KeyCheck

Tx = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


@dataclass
class PoolMailbox:
    id: str
    email: str
    from_name: str | None
    daily_cap: int
    usable: bool  # active and healthy


@dataclass
class Sender:
    id: str
    handle: str
    display_name: str | None
    daily_cap: int
    timezone: str
    pool: dict[str, PoolMailbox]  # live mailboxes of the pool, in pool order
    suppressed: set[str] = field(default_factory=set)  # of the given leads, lower-cased
    pins: dict[str, str] = field(default_factory=dict)  # lower-cased lead → mailbox id


def _key_status(prefix: str, digest: str) -> str:
    """SQL: 'ok' when the key (parameters `prefix`, `digest`) is live and may act in workspace
    $1 — a workspace key of that workspace, or a platform key of the operator owning it
    ('not_found' otherwise, as `gateway.api.auth.owned_workspace` answers); NULL when the key
    is unknown, revoked or does not match its prefix (401)."""
    return (
        "(SELECT CASE WHEN k.workspace_id IS NOT NULL"
        "   THEN CASE WHEN k.workspace_id = $1 THEN 'ok' END"
        "   WHEN EXISTS (SELECT 1 FROM workspaces w WHERE w.id = $1 AND w.operator_id = k.operator_id)"
        "   THEN 'ok' ELSE 'not_found' END"
        f" FROM api_keys k WHERE k.prefix = {prefix} AND k.key_hash = {digest}"
        " AND k.revoked_at IS NULL)"
    )


def raise_for_key(status: str | None) -> None:
    """The API's answer for a key check: 401 unless the key is live, 404 for a foreign workspace."""
    if status is None:
        raise Unauthorized()
    if status == "not_found":
        raise NotFound()


async def check_key(conn: Tx, workspace_id: str, key: KeyCheck) -> None:
    """The key check alone (error paths that must answer 401/404 before anything else)."""
    status: str | None = await conn.fetchval(
        "SELECT " + _key_status("$2", "$3"),
        workspace_id, key.prefix, key.digest,
    )
    raise_for_key(status)


def _forms(leads: list[str]) -> list[str]:
    # Writers store suppressions with a lower-cased domain or all lower-cased: look up both
    # forms so the primary key serves the query.
    return sorted({e for a in leads for e in (a, a.lower())})


async def sender(
    conn: Tx, workspace_id: str, handle: str, leads: list[str], key: KeyCheck | None = None
) -> Sender | None:
    """The live identity with this handle, its pool, and the suppressions and pins of `leads`.

    With `key`, the key is checked in the same statement first (401 / 404, `raise_for_key`).
    """
    row = await conn.fetchrow(
        "SELECT CASE WHEN $5::text IS NULL THEN 'ok' ELSE "
        + _key_status("$5", "$6::bytea") + " END AS key_status,"
        " i.id, i.handle, i.display_name, i.daily_cap, i.timezone,"
        " (SELECT COALESCE(json_agg(json_build_object('id', m.id, 'email', m.email,"
        "   'from_name', m.from_name, 'daily_cap', m.daily_cap,"
        "   'usable', m.status = 'active' AND m.health = 'healthy') ORDER BY im.position), '[]')"
        "  FROM identity_mailboxes im JOIN mailboxes m ON m.id = im.mailbox_id"
        "  WHERE im.identity_id = i.id AND m.deleted_at IS NULL) AS pool,"
        " (SELECT COALESCE(array_agg(lower(s.email)), '{}') FROM suppressions s"
        "  WHERE s.workspace_id = i.workspace_id AND s.email = ANY($3::text[])) AS suppressed,"
        " (SELECT COALESCE(json_object_agg(a.lead_email, a.mailbox_id), '{}') FROM affinities a"
        "  WHERE a.identity_id = i.id AND a.lead_email = ANY($4::text[])) AS pins"
        " FROM (SELECT 1) AS one LEFT JOIN identities i"
        "  ON i.workspace_id = $1 AND lower(i.handle) = lower($2) AND i.deleted_at IS NULL",
        workspace_id, handle, _forms(leads), [x.lower() for x in leads],
        key.prefix if key is not None else None, key.digest if key is not None else None,
    )
    assert row is not None
    raise_for_key(row["key_status"])
    if row["id"] is None:
        return None
    pool = {m["id"]: PoolMailbox(**m) for m in row["pool"]}
    return Sender(row["id"], row["handle"], row["display_name"], row["daily_cap"], row["timezone"],
                  pool, set(row["suppressed"]), dict(row["pins"]))


async def suppressed(conn: Tx, workspace_id: str, leads: list[str]) -> set[str]:
    rows = await conn.fetch(
        "SELECT lower(email) AS email FROM suppressions WHERE workspace_id = $1"
        " AND email = ANY($2::text[])",
        workspace_id, _forms(leads),
    )
    return {r["email"] for r in rows}
