"""Poller coordination: IMAP folder cursors, the mailboxes eligible to watch, heartbeats and leases."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

_ELIGIBLE = "m.status = 'active' AND m.deleted_at IS NULL AND m.imap IS NOT NULL"


@dataclass(frozen=True)
class Cursor:
    uidvalidity: int
    last_uid: int


# --- cursors ------------------------------------------------------------------------------


async def get_cursor(conn: asyncpg.Connection | asyncpg.Pool, mailbox_id: str, folder: str) -> Cursor | None:
    row = await conn.fetchrow(
        "SELECT uidvalidity, last_uid FROM imap_cursors WHERE mailbox_id = $1 AND folder = $2",
        mailbox_id, folder,
    )
    return Cursor(row["uidvalidity"], row["last_uid"]) if row else None


def cursor_upsert(first: int) -> str:
    """SQL that moves a folder's cursor, its parameters (mailbox_id, folder, uidvalidity,
    last_uid) numbered from `first` (a batch also runs it as part of its last statement)."""
    a, b, c, d = (f"${first + i}" for i in range(4))
    return (f"INSERT INTO imap_cursors (mailbox_id, folder, uidvalidity, last_uid)"
            f" VALUES ({a}, {b}, {c}, {d})"
            " ON CONFLICT (mailbox_id, folder) DO UPDATE SET uidvalidity = EXCLUDED.uidvalidity,"
            "  last_uid = EXCLUDED.last_uid, updated_at = now()")


async def set_cursor(
    conn: asyncpg.Connection | asyncpg.Pool, mailbox_id: str, folder: str, uidvalidity: int, last_uid: int
) -> None:
    await conn.execute(cursor_upsert(1), mailbox_id, folder, uidvalidity, last_uid)


# --- mailboxes and leases -----------------------------------------------------------------


async def mailbox_for_watch(pool: asyncpg.Pool, mailbox_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow(
        f"SELECT m.id, m.workspace_id, m.email, m.imap, m.imap_password_enc FROM mailboxes m"
        f" WHERE m.id = $1 AND {_ELIGIBLE}",
        mailbox_id,
    )


async def heartbeat(pool: asyncpg.Pool, owner: str, seconds: float) -> int:
    """Announce this poller alive; returns how many pollers are alive (this one included)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO poller_heartbeats (owner, expires_at)"
            " VALUES ($1, now() + make_interval(secs => $2))"
            " ON CONFLICT (owner) DO UPDATE SET expires_at = EXCLUDED.expires_at",
            owner, seconds,
        )
        await conn.execute("DELETE FROM poller_heartbeats WHERE expires_at < now() - interval '1 hour'")
        alive: int = await conn.fetchval("SELECT count(*) FROM poller_heartbeats WHERE expires_at > now()")
    return alive


async def drop_heartbeat(pool: asyncpg.Pool, owner: str) -> None:
    await pool.execute("DELETE FROM poller_heartbeats WHERE owner = $1", owner)


async def count_eligible(pool: asyncpg.Pool) -> int:
    n: int = await pool.fetchval(f"SELECT count(*) FROM mailboxes m WHERE {_ELIGIBLE}")
    return n


async def renew_leases(pool: asyncpg.Pool, owner: str, held: list[str], seconds: float) -> set[str]:
    """Extend this owner's leases on mailboxes still eligible; returns those still held."""
    rows = await pool.fetch(
        "UPDATE mailbox_leases l SET expires_at = now() + make_interval(secs => $3)"
        f" FROM mailboxes m WHERE l.mailbox_id = m.id AND l.owner = $1"
        f" AND l.mailbox_id = ANY($2::text[]) AND {_ELIGIBLE} RETURNING l.mailbox_id",
        owner, held, seconds,
    )
    return {r["mailbox_id"] for r in rows}


async def acquire_leases(pool: asyncpg.Pool, owner: str, limit: int, seconds: float) -> list[str]:
    """Take up to `limit` free or expired leases (one atomic upsert per candidate)."""
    if limit <= 0:
        return []
    candidates = await pool.fetch(
        f"SELECT m.id FROM mailboxes m LEFT JOIN mailbox_leases l ON l.mailbox_id = m.id"
        f" WHERE {_ELIGIBLE} AND (l.mailbox_id IS NULL OR l.expires_at < now() OR l.owner = $1)"
        f" ORDER BY random() LIMIT $2",
        owner, limit,
    )
    won: list[str] = []
    for row in candidates:
        got = await pool.fetchval(
            "INSERT INTO mailbox_leases (mailbox_id, owner, expires_at)"
            " VALUES ($1, $2, now() + make_interval(secs => $3))"
            " ON CONFLICT (mailbox_id) DO UPDATE SET owner = EXCLUDED.owner,"
            "  expires_at = EXCLUDED.expires_at"
            " WHERE mailbox_leases.expires_at < now() OR mailbox_leases.owner = EXCLUDED.owner"
            " RETURNING mailbox_id",
            row["id"], owner, seconds,
        )
        if got is not None:
            won.append(got)
    return won


async def release_leases(pool: asyncpg.Pool, owner: str, mailbox_ids: list[str]) -> None:
    await pool.execute(
        "DELETE FROM mailbox_leases WHERE owner = $1 AND mailbox_id = ANY($2::text[])", owner, mailbox_ids
    )


async def hold_lease(conn: asyncpg.Connection, mailbox_id: str, owner: str) -> bool:
    """Fence a batch: the lease is still ours and unexpired (locked until the commit)."""
    row = await conn.fetchval(
        "SELECT 1 FROM mailbox_leases WHERE mailbox_id = $1 AND owner = $2 AND expires_at > now()"
        " FOR UPDATE",
        mailbox_id, owner,
    )
    return row is not None
