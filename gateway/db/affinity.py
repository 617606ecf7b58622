"""Sender pools and recipient affinity: an identity with its mailboxes, lead → mailbox pins,
and the workspace's suppressions of the leads, read in one round trip."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

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


def _forms(leads: list[str]) -> list[str]:
    # Writers store suppressions with a lower-cased domain or all lower-cased: look up both
    # forms so the primary key serves the query.
    return sorted({e for a in leads for e in (a, a.lower())})


async def sender(conn: Tx, workspace_id: str, handle: str, leads: list[str]) -> Sender | None:
    """The live identity with this handle, its pool, and the suppressions and pins of `leads`."""
    row = await conn.fetchrow(
        "SELECT i.id, i.handle, i.display_name, i.daily_cap, i.timezone,"
        " (SELECT COALESCE(json_agg(json_build_object('id', m.id, 'email', m.email,"
        "   'from_name', m.from_name, 'daily_cap', m.daily_cap,"
        "   'usable', m.status = 'active' AND m.health = 'healthy') ORDER BY im.position), '[]')"
        "  FROM identity_mailboxes im JOIN mailboxes m ON m.id = im.mailbox_id"
        "  WHERE im.identity_id = i.id AND m.deleted_at IS NULL) AS pool,"
        " (SELECT COALESCE(array_agg(lower(s.email)), '{}') FROM suppressions s"
        "  WHERE s.workspace_id = i.workspace_id AND s.email = ANY($3::text[])) AS suppressed,"
        " (SELECT COALESCE(json_object_agg(a.lead_email, a.mailbox_id), '{}') FROM affinities a"
        "  WHERE a.identity_id = i.id AND a.lead_email = ANY($4::text[])) AS pins"
        " FROM identities i"
        " WHERE i.workspace_id = $1 AND lower(i.handle) = lower($2) AND i.deleted_at IS NULL",
        workspace_id, handle, _forms(leads), [x.lower() for x in leads],
    )
    if row is None:
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
