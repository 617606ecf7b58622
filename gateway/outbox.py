"""Transactional outbox: stage rows inside the caller's transaction, publish them after commit.

The writer publishes right after its commit and stamps `published_at`; the scheduler relays
rows that were never stamped (a crash between commit and publish) and rows whose
`available_at` (a scheduled send) has come.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import asyncpg

from gateway.bus.publisher import Publisher
from gateway.logging import get_logger

log = get_logger(__name__)


async def stage(
    conn: asyncpg.Connection,
    exchange: str,
    routing_key: str,
    body: bytes,
    *,
    message_id: str,
    headers: dict[str, Any] | None = None,
    available_at: datetime | None = None,
) -> int:
    row_id: int = await conn.fetchval(
        "INSERT INTO outbox (exchange, routing_key, message_id, body, headers, available_at)"
        " VALUES ($1, $2, $3, $4, $5, COALESCE($6, now())) RETURNING id",
        exchange,
        routing_key,
        message_id,
        body,
        headers or {},
        available_at,
    )
    return row_id


async def publish_rows(pool: asyncpg.Pool, publisher: Publisher, ids: list[int]) -> None:
    """Publish staged rows now (with confirms) and stamp them. Skips rows not yet due.

    Rows are locked while they are published, so a relay running at the same moment skips
    them instead of publishing them a second time.
    """
    if not ids:
        return
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT id, exchange, routing_key, message_id, body, headers FROM outbox"
            " WHERE id = ANY($1::bigint[]) AND published_at IS NULL AND available_at <= now()"
            " ORDER BY id FOR UPDATE SKIP LOCKED",
            ids,
        )
        await _publish_and_stamp(conn, publisher, rows)


async def _publish_and_stamp(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, publisher: Publisher,
    rows: list[asyncpg.Record],
) -> None:
    """Publish the locked rows in order, then mark them published (in the caller's transaction)."""
    for row in rows:
        await _publish(publisher, row)
    if rows:
        await conn.execute(
            "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
            [r["id"] for r in rows],
        )


async def _publish(publisher: Publisher, row: asyncpg.Record) -> None:
    await publisher.publish(
        row["exchange"],
        row["routing_key"],
        bytes(row["body"]),
        message_id=row["message_id"],
        headers=row["headers"],
    )


async def relay_due(
    pool: asyncpg.Pool, publisher: Publisher, *, grace_seconds: float, limit: int = 200
) -> int:
    """Publish rows that are due and unpublished. Safe with several relays (SKIP LOCKED)."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT id, exchange, routing_key, message_id, body, headers FROM outbox"
            " WHERE published_at IS NULL AND available_at <= now()"
            "   AND (available_at > created_at"
            "        OR created_at <= now() - make_interval(secs => $1))"
            " ORDER BY available_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
            grace_seconds,
            limit,
        )
        await _publish_and_stamp(conn, publisher, rows)
        return len(rows)


class Stamper:
    """Marks rows a writer has published as `published_at` in batches: at most one UPDATE per
    `interval` instead of one per message.

    A row published but not yet stamped when the process dies is relayed again by the
    scheduler: a duplicate with the same message id, which subscribers dedupe (events) and
    delivery recognises (deliver tasks), so it costs a duplicate message, never a mail.
    """

    def __init__(self, pool: asyncpg.Pool, interval: float = 0.05) -> None:
        self.pool = pool
        self.interval = interval
        self._ids: list[int] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, outbox_ids: Iterable[int]) -> None:
        self._ids.extend(outbox_ids)
        if self._ids and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.interval)  # stamps accumulate meanwhile
        await self.flush()

    async def flush(self) -> None:
        ids, self._ids = self._ids, []
        if not ids:
            return
        try:
            await self.pool.execute(
                "UPDATE outbox SET published_at = now()"
                " WHERE id = ANY($1::bigint[]) AND published_at IS NULL", ids)
        except Exception as exc:  # the scheduler relays them; nothing is lost
            log.warning("outbox_stamp_failed", count=len(ids), error=repr(exc))

    async def close(self) -> None:
        """Stamp what is pending now (on shutdown)."""
        if self._task is not None:
            self._task.cancel()
        await self.flush()
