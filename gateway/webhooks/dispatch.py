"""The dispatcher's engine: event → pending attempt rows → signed POSTs → recorded outcomes.

Every attempt is a row in `webhook_deliveries` before it is tried. An event from the
broker is acked once its first attempts are rows; rows this process has room for are
born claimed (a lease in `next_attempt_at`) and POSTed at once, the others — and every
retry — are claimed by `run()` with `FOR UPDATE SKIP LOCKED` when due. A dispatcher that
dies mid-POST leaves its rows pending; they come due again when the lease runs out and
are sent with the same `webhook-id`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import asyncpg
import orjson
from prometheus_client import Counter

from gateway.bus.publisher import Publisher
from gateway.config import Settings
from gateway.crypto import Vault
from gateway.db import webhooks as db
from gateway.errors import PermanentError
from gateway.logging import get_logger
from gateway.webhooks import egress, signing
from gateway.webhooks.attempts import decide
from gateway.webhooks.batching import Batcher
from gateway.webhooks.capacity import Admission, Capacity
from gateway.webhooks.recorder import Attempt, LostClaim, Recorder
from gateway.webhooks.schedule import matches

log = get_logger(__name__)

ATTEMPTS = Counter("mailgw_webhook_attempts_total", "Webhook delivery attempts", ["outcome"])
TEST_EVENT = "webhook.test"
Row = asyncpg.Record | Mapping[str, Any]


def _test_target(event: Mapping[str, Any]) -> str | None:
    """The endpoint a `webhook.test` event names (it goes to that endpoint alone)."""
    if event["type"] != TEST_EVENT:
        return None
    data = event.get("data")
    target = data.get("webhookId") if isinstance(data, dict) else None
    return target if isinstance(target, str) else None


def _receives(ep: Row, event: Mapping[str, Any]) -> bool:
    if ep["workspace_id"] != event["workspaceId"]:
        return False
    if event["type"] == TEST_EVENT:
        return bool(ep["id"] == _test_target(event))
    return bool(ep["usable"]) and matches(ep["events"], event["type"])


def parse_event(body: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise PermanentError("event body is not JSON") from None
    if not isinstance(event, dict) or not all(
        isinstance(event.get(k), str) for k in ("id", "type", "workspaceId")
    ):
        raise PermanentError("event lacks id, type or workspaceId")
    return event


class Dispatcher:
    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, publisher: Publisher, vault: Vault,
        *, poll_seconds: float = 1.0, rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.publisher = publisher
        self.vault = vault
        self.poll_seconds = poll_seconds
        self.rng = rng
        # Longer than any POST may take (timeout, plus recording), so a live claim never expires.
        self.lease_seconds = 1.5 * settings.webhook_timeout + 2
        self.capacity: Capacity[Attempt] = Capacity(
            global_limit=settings.webhook_concurrency,
            per_endpoint=settings.webhook_concurrency_per_endpoint,
            timeout=settings.webhook_timeout, base_lease=self.lease_seconds,
        )
        self.tasks: set[asyncio.Task[None]] = set()
        self.wake = asyncio.Event()
        self._soonest: float | None = None
        self._secrets: dict[str, str] = {}
        self._session: aiohttp.ClientSession | None = None
        self._intake = Batcher(self._intake_batch, max_batch=512, workers=2)
        self.recorder = Recorder(settings, pool, publisher)

    # --- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Dispatcher:
        self._session = egress.make_session(
            timeout=self.settings.webhook_timeout,
            allow_private=self.settings.webhooks_allow_private,
            limit=self.capacity.global_limit,
            limit_per_host=0,  # per-endpoint bounds are ours (several endpoints may share a host)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.capacity.closing = True  # queued attempts stay claimed; taken over after their lease
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=self.settings.webhook_timeout + 2)
            for task in pending:  # their rows stay pending and are retried after the lease
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._session is not None:
            await self._session.close()

    # --- events from the broker ----------------------------------------------------------

    async def handle_event(self, body: bytes) -> int:
        """Record attempt 1 for every matching endpoint (batched with concurrent events).

        Returns how many endpoints the event goes to; once this returns the rows are
        committed and the broker message may be acked.
        """
        return await self._intake.submit((parse_event(body), body))

    async def _intake_batch(self, items: list[tuple[dict[str, Any], bytes]]) -> list[int]:
        counts = [0] * len(items)
        plan: list[tuple[asyncpg.Record, int, Admission | None]] = []  # (endpoint, item, admission)
        inserted: dict[tuple[str, str], asyncpg.Record] = {}
        try:
            async with self.pool.acquire() as conn:
                endpoints = await db.targets(
                    conn,
                    list({e["workspaceId"] for e, _ in items if e["type"] != TEST_EVENT}),
                    [w for e, _ in items if (w := _test_target(e)) is not None],
                )
                for i, (event, _) in enumerate(items):
                    for ep in endpoints:
                        if _receives(ep, event):
                            plan.append((ep, i, self.capacity.admit(ep["id"])))
                            counts[i] += 1
                if plan:  # one statement: bodies and attempts commit together
                    rows = await db.insert_first_attempts(
                        conn,
                        [(e["id"], e["workspaceId"], e["type"], body)
                         for (e, body), n in zip(items, counts, strict=True) if n],
                        [(ep["id"], items[i][0]["id"], items[i][0]["type"], adm.lease if adm else None)
                         for ep, i, adm in plan],
                    )
                    inserted = {(r["endpoint_id"], r["event_id"]): r for r in rows}
        except BaseException:
            for ep, _, adm in plan:
                if adm is not None:
                    self._abandon(ep["id"], adm)
            raise
        for ep, i, adm in plan:
            if adm is None:
                self.wake.set()  # due now, for the claim loop
                continue
            row = inserted.pop((ep["id"], items[i][0]["id"]), None)
            if row is None:  # a redelivered event: its rows existed already
                self._abandon(ep["id"], adm)
                continue
            attempt = self._attempt_of(ep, row, items[i][1])
            if adm.now:
                self._spawn(attempt)
            else:
                for ready in self.capacity.enqueue(ep["id"], attempt):
                    self._spawn(ready)
        return counts

    def _abandon(self, endpoint_id: str, admission: Admission) -> None:
        handed = self.capacity.abandon(endpoint_id, admission)
        if handed is not None:
            self._spawn(handed)
        self.wake.set()

    # --- the claim loop -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and start due attempts until `stop`; waits on `stop` or a wake-up, never blindly."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            self.wake.clear()
            claimed = 0
            try:
                claimed = await self.claim_once()
            except Exception as exc:  # database trouble: try again after the poll interval
                log.warning("webhook_claim_failed", error=repr(exc))
            if claimed and self.capacity.free() > 0:
                continue  # more may be due right now
            timeout = self.poll_seconds
            if self._soonest is not None:
                timeout = max(0.0, min(timeout, self._soonest - loop.time()))
                self._soonest = None
            await self._wait(stop, timeout)

    async def claim_once(self) -> int:
        cap = self.capacity
        plan, skip, room = cap.claim_plan()
        if room <= 0:
            return 0
        cap.paused = True  # no admissions while the plan above is in use
        try:
            rows = await db.claim_due(
                self.pool, plan=plan, skip=skip, limit=room, per_endpoint=cap.per_endpoint,
                queue_limit=cap.queue_limit, base_lease=self.lease_seconds, post_seconds=cap.timeout,
            )
        finally:
            cap.paused = False
        # Rows come in due order; within an endpoint, slot rows rank before queue rows.
        for row in rows:
            body = bytes(row["body"]) if row["body"] is not None else None
            attempt = self._attempt_of(row, row, body)
            if row["start_now"] and cap.has_room(row["endpoint_id"]):
                cap.take(row["endpoint_id"])
                self._spawn(attempt)
            else:
                cap.force_enqueue(row["endpoint_id"], attempt)
        for ready in cap.pump():
            self._spawn(ready)
        return len(rows)

    async def _wait(self, stop: asyncio.Event, seconds: float) -> None:
        if stop.is_set() or self.wake.is_set():
            return
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(self.wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    def _note_due(self, seconds: float) -> None:
        due = asyncio.get_running_loop().time() + seconds
        if self._soonest is None or due < self._soonest:
            self._soonest = due
        self.wake.set()  # recompute the loop's timeout

    # --- running attempts -----------------------------------------------------------------

    def _spawn(self, a: Attempt) -> None:
        released = False

        def release() -> None:
            """The endpoint's slot frees as soon as the POST is over (recording needs none)."""
            nonlocal released
            if not released:
                released = True
                cap = self.capacity
                handed = cap.release(a.endpoint_id)
                for ready in [handed] if handed is not None else cap.pump():
                    self._spawn(ready)
                # Claim again when a slot is free, or once the queue is half spent (not per POST).
                if handed is None or cap.queued(a.endpoint_id) == cap.queue_limit // 2:
                    self.wake.set()

        task = asyncio.create_task(self._run_attempt(a, release), name=f"webhook:{a.id}")
        self.tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self.tasks.discard(t)
            release()

        task.add_done_callback(done)

    # --- one attempt ----------------------------------------------------------------------

    def _decrypt(self, token: str) -> str:
        plain = self._secrets.get(token)
        if plain is None:
            if len(self._secrets) > 10_000:
                self._secrets.clear()
            plain = self._secrets[token] = self.vault.decrypt(token)
        return plain

    def _attempt_of(self, ep: Row, row: Row, body: bytes | None) -> Attempt:
        """`ep`: the endpoint's signing columns; `row`: the claimed attempt.

        No secrets (an unreadable one) makes the attempt fail without a POST.
        """
        secrets: list[str] = []
        try:
            secrets.append(self._decrypt(ep["secret"]))
            if ep["previous_secret"] is not None:
                secrets.append(self._decrypt(ep["previous_secret"]))
        except ValueError:
            secrets = []
        return Attempt(
            row["id"], row["endpoint_id"], row["event_id"], row["event_type"], row["attempt"],
            row["next_attempt_at"], ep["workspace_id"], ep["url"], bool(ep["usable"]),
            tuple(secrets), body,
        )

    async def _run_attempt(self, a: Attempt, release: Callable[[], None]) -> None:
        try:
            if not a.usable:
                await self.recorder.failed_unsent(a, "endpoint disabled or deleted")
            elif a.body is None:
                await self.recorder.failed_unsent(a, "event payload missing")
            elif not a.secrets:
                await self.recorder.failed_unsent(a, "signing secret unreadable with the configured keys")
            else:
                await self.deliver(a, release)
        except LostClaim:
            log.info("webhook_claim_lost", delivery_id=a.id)
        except Exception as exc:  # the row stays pending and is retried after its lease
            log.error("webhook_attempt_crashed", delivery_id=a.id, error=repr(exc))

    async def deliver(self, a: Attempt, release: Callable[[], None]) -> None:
        assert self._session is not None and a.body is not None
        headers = signing.headers(a.secrets, a.event_id, a.body)
        result = await egress.post(
            self._session, a.url, a.body, headers, self.settings.webhooks_allow_private
        )
        release()
        decision = decide(result, a.attempt, self.settings.webhook_retry_schedule, self.rng)
        ATTEMPTS.labels("succeeded" if decision.succeeded else "failed").inc()
        if decision.succeeded:
            await self.recorder.success(a, result)
            return
        retry_in = await self.recorder.failure(a, result, decision)
        if retry_in is not None:
            self._note_due(retry_in)
