"""Recording attempt outcomes: successes batched, failures with retry and disabling."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

import asyncpg

from gateway import events, outbox
from gateway.bus.publisher import Publisher
from gateway.config import Settings
from gateway.db import webhooks as db
from gateway.logging import get_logger
from gateway.webhooks.attempts import Decision
from gateway.webhooks.batching import Batcher
from gateway.webhooks.egress import PostResult
from gateway.webhooks.signing import Signer

log = get_logger(__name__)

DISABLED_EVENT = "webhook_endpoint.disabled"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One claimed attempt and everything needed to make it."""

    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    attempt: int
    token: datetime  # the claim's lease expiry; the outcome is recorded only while it holds
    workspace_id: str
    url: str
    usable: bool  # endpoint enabled and not deleted
    signer: Signer | None  # None: a secret is unreadable with the configured keys
    body: bytes | None
    deadline: float  # event-loop time when the claim's lease runs out (never after the DB's)


class LostClaim(Exception):
    """The lease ran out and another dispatcher took the attempt over."""


class Recorder:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, publisher: Publisher) -> None:
        self.settings = settings
        self.pool = pool
        self.publisher = publisher
        # Recorded up to 5 ms later (at once when no POST is in flight), successes share
        # statements ~4x larger (see `Batcher`; bench: 16 -> 61 rows per statement); a crash
        # in that time leaves them pending, re-sent after their lease (as before).
        self._successes = Batcher(self._record_successes, max_batch=1024, min_batch=64, linger=0.005)

    def success(self, a: Attempt, result: PostResult) -> None:
        """Queue a success for the next batch; the slot's next POST need not wait for it.

        Not recorded (a lost claim, database trouble, a crash before the batch commits):
        the row stays pending and is sent again, with the same webhook-id, after its lease.
        """
        self._successes.submit_nowait((a, result))

    def hurry(self) -> None:
        """No POST is in flight: record the queued successes without lingering for more."""
        self._successes.hurry()

    async def flush(self) -> None:
        """Wait until every queued success is recorded (shutdown)."""
        await self._successes.idle()

    async def _record_successes(self, done: list[tuple[Attempt, PostResult]]) -> list[bool]:
        try:
            recorded = await db.record_successes(self.pool, [
                (a.id, a.token, r.status, r.duration_ms, r.snippet) for a, r in done
            ])
        except Exception as exc:  # the rows stay pending and are retried after their lease
            log.error("webhook_successes_unrecorded", count=len(done), error=repr(exc))
            return [False] * len(done)
        for a, _ in done:
            if a.id not in recorded:
                log.info("webhook_claim_lost", delivery_id=a.id)
        return [a.id in recorded for a, _ in done]

    async def failed_unsent(self, a: Attempt, error: str) -> None:
        """The attempt cannot be made (endpoint gone, no payload, unreadable secret)."""
        async with self.pool.acquire() as conn, conn.transaction():
            if not await db.record_failure(
                conn, delivery_id=a.id, token=a.token, code=None, duration_ms=None, snippet=None,
                error=error, retry_in=None,
            ):
                raise LostClaim()

    async def failure(self, a: Attempt, result: PostResult, decision: Decision) -> float | None:
        """Record a failed attempt, schedule its retry or disable the endpoint; returns the
        seconds until the retry (None: no retry)."""
        staged: list[int] = []
        retry_in = decision.retry_in
        async with self.pool.acquire() as conn, conn.transaction():
            streak = await db.mark_failing(conn, a.endpoint_id)
            reason = decision.disable_reason
            limit = self.settings.webhook_disable_after
            if reason is None and streak >= limit:
                reason = f"failing continuously for {streak:.0f} s (limit {limit:g} s)"
            if reason is not None:
                retry_in = None
            if not await db.record_failure(
                conn, delivery_id=a.id, token=a.token, code=result.status,
                duration_ms=result.duration_ms, snippet=result.snippet,
                error=decision.error or "failed", retry_in=retry_in,
            ):
                raise LostClaim()
            if reason is not None and await db.disable_endpoint(conn, a.endpoint_id, reason):
                _, row_id = await events.stage(
                    cast(asyncpg.Connection, conn), DISABLED_EVENT, a.workspace_id,
                    {"webhookId": a.endpoint_id, "url": a.url, "reason": reason},
                )
                staged.append(row_id)
                log.warning("webhook_endpoint_disabled", webhook_id=a.endpoint_id, reason=reason)
        if staged:
            try:
                await outbox.publish_rows(self.pool, self.publisher, staged)
            except Exception as exc:  # staged in the outbox: the scheduler relays it
                log.warning("webhook_event_publish_deferred", error=repr(exc))
        return retry_in
