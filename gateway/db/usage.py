"""Daily cap accounting: one row per subject (identity or mailbox) and day, raced in SQL."""

from __future__ import annotations

import zoneinfo
from datetime import date, datetime

import asyncpg

from gateway.timefmt import now


def day_in(timezone: str, at: datetime | None = None) -> date:
    """The calendar day of `at` (default now) in the identity's time zone."""
    return (at or now()).astimezone(zoneinfo.ZoneInfo(timezone)).date()


async def reserve(conn: asyncpg.Connection, subject_id: str, day: date, cap: int, n: int = 1) -> bool:
    """Take `n` units if that keeps `used <= cap`; one statement, so exact under concurrency."""
    if n > cap:
        return False
    row = await conn.fetchrow(
        "INSERT INTO daily_usage AS u (subject_id, day, used) VALUES ($1, $2, $3)"
        " ON CONFLICT (subject_id, day) DO UPDATE SET used = u.used + $3"
        " WHERE u.used + $3 <= $4 RETURNING used",
        subject_id, day, n, cap,
    )
    return row is not None


async def add(conn: asyncpg.Connection, subject_id: str, day: date, n: int = 1) -> None:
    """Count usage without a cap check (e.g. inbox replies counted toward a mailbox)."""
    await conn.execute(
        "INSERT INTO daily_usage AS u (subject_id, day, used) VALUES ($1, $2, $3)"
        " ON CONFLICT (subject_id, day) DO UPDATE SET used = u.used + $3",
        subject_id, day, n,
    )


async def release(conn: asyncpg.Connection, subject_id: str, day: date, n: int = 1) -> None:
    await conn.execute(
        "UPDATE daily_usage SET used = greatest(used - $3, 0) WHERE subject_id = $1 AND day = $2",
        subject_id, day, n,
    )


async def used(conn: asyncpg.Connection | asyncpg.Pool, subject_ids: list[str], day: date) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT subject_id, used FROM daily_usage WHERE subject_id = ANY($1::text[]) AND day = $2",
        subject_ids, day,
    )
    out = dict.fromkeys(subject_ids, 0)
    out.update({r["subject_id"]: r["used"] for r in rows})
    return out
