"""The dispatcher's engine: event → pending attempt rows → signed POSTs → recorded outcomes.

Every attempt is a row in `webhook_deliveries` before it is tried. An event from the
broker is acked once its first attempts are rows; rows this process has room for (a free
slot, or a place in the endpoint's in-process queue) are born claimed (a lease in
`next_attempt_at`) and handed straight to their endpoint, the others — and every retry —
are claimed by `run()` with `FOR UPDATE SKIP LOCKED` when due. A dispatcher that dies
mid-POST leaves its rows pending; they come due again when the lease runs out and are
sent with the same `webhook-id`. No attempt starts unless a POST and its recording fit
in what is left of its lease, so a row is never sent by two dispatchers at once.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

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
from gateway.webhooks import egress
from gateway.webhooks.attempts import decide
from gateway.webhooks.capacity import MAX_QUEUED_ROUNDS, Admission, Capacity
from gateway.webhooks.recorder import Attempt, LostClaim, Recorder
from gateway.webhooks.schedule import matches
from gateway.webhooks.signing import Signer

log = get_logger(__name__)

ATTEMPTS = Counter("mailgw_webhook_attempts_total", "Webhook delivery attempts", ["outcome"])
_SUCCEEDED, _FAILED = ATTEMPTS.labels("succeeded"), ATTEMPTS.labels("failed")
TEST_EVENT = "webhook.test"
Row = asyncpg.Record | Mapping[str, Any]


class Release(Protocol):
    """Frees an attempt's slot (once); `keep=True` may return the next attempt to run."""

    def __call__(self, keep: bool = False) -> Attempt | None: ...


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
        # An attempt starts only while this much of its lease is left: its POST ends within
        # the timeout, and 2 s are for recording the outcome.
        self.start_margin = settings.webhook_timeout + 2
        self.capacity: Capacity[Attempt] = Capacity(
            global_limit=settings.webhook_concurrency,
            per_endpoint=settings.webhook_concurrency_per_endpoint,
            timeout=settings.webhook_timeout, base_lease=self.lease_seconds,
        )
        self.tasks: set[asyncio.Task[None]] = set()
        self.wake = asyncio.Event()
        self._soonest: float | None = None
        # Rows may be due in the database that no claim has seen yet: only then does a
        # freed slot wake the claim loop (a claim per freed slot would mostly find nothing).
        self._maybe_due = True
        self._signers: dict[tuple[str, str | None], Signer | None] = {}
        self._session: aiohttp.ClientSession | None = None
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
        await self.recorder.flush()  # the successes still queued
        if self._session is not None:
            await self._session.close()

    # --- events from the broker ----------------------------------------------------------

    async def intake(self, items: list[tuple[dict[str, Any], bytes]]) -> list[int]:
        """Record attempt 1 of each (parsed event, body) for every matching endpoint, in one
        transaction, and hand the attempts this process has room for to their endpoints.

        Returns how many endpoints each event goes to; once this returns the rows are
        committed and the broker messages may be acked.
        """
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
                    # The leases run from the statement's now(), later than this instant.
                    claimed_at = asyncio.get_running_loop().time()
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
                self._maybe_due = True
                self.wake.set()  # due now, for the claim loop
                continue
            row = inserted.pop((ep["id"], items[i][0]["id"]), None)
            if row is None:  # a redelivered event: its rows existed already
                self._abandon(ep["id"], adm)
                continue
            attempt = self._attempt_of(ep, row, items[i][1], claimed_at + adm.lease)
            if adm.now:
                self._start(attempt)
            else:
                for ready in self.capacity.enqueue(ep["id"], attempt):
                    self._start(ready)
        return counts

    def _abandon(self, endpoint_id: str, admission: Admission) -> None:
        handed = self.capacity.abandon(endpoint_id, admission)
        if handed is not None:
            self._start(handed)
        self._maybe_due = True  # a redelivered event's rows may be due
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
        # The intake keeps admitting while this claim runs: the plan may go stale, which the
        # code below absorbs (a row for a slot taken meanwhile is queued; a queued row whose
        # lease was reckoned on a shorter queue is deferred rather than started late).
        self._maybe_due = False  # set again by whatever leaves rows due meanwhile
        try:
            claimed_at = asyncio.get_running_loop().time()
            rows = await db.claim_due(
                self.pool, plan=plan, skip=skip, limit=room, per_endpoint=cap.per_endpoint,
                queue_limit=cap.claim_queue_limit, base_lease=self.lease_seconds, post_seconds=cap.timeout,
                max_rounds=MAX_QUEUED_ROUNDS,
            )
        except BaseException:
            self._maybe_due = True
            raise
        if rows or skip:  # more may be due (beyond this claim's room, or for full endpoints)
            self._maybe_due = True
        # Rows come in due order; within an endpoint, slot rows rank before queue rows.
        for row in rows:
            body = bytes(row["body"]) if row["body"] is not None else None
            attempt = self._attempt_of(row, row, body, claimed_at + row["lease"])
            if row["start_now"] and cap.has_room(row["endpoint_id"]):
                cap.take(row["endpoint_id"])
                self._start(attempt)
            else:
                cap.force_enqueue(row["endpoint_id"], attempt)
        for ready in cap.pump():
            self._start(ready)
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

    def _start(self, a: Attempt) -> None:
        """Run `a` in the slot it holds, unless its lease is too far spent (it waited in a
        queue behind slow POSTs): then the slot goes to the next queued attempt, and the row
        is left to come due in the database, where the claim loop takes it again."""
        now = asyncio.get_running_loop().time()
        if a.deadline - now >= self.start_margin:
            self._spawn(a)
            return
        cap = self.capacity
        todo, deferred = deque([a]), 0
        while todo:
            nxt = todo.popleft()
            if nxt.deadline - now >= self.start_margin:
                self._spawn(nxt)
                continue
            deferred += 1
            self._note_due(max(0.0, nxt.deadline - now) + 1)
            handed = cap.release(nxt.endpoint_id)
            # The freed slot goes to the endpoint's next attempt, or to another endpoint's.
            todo.extend([handed] if handed is not None else cap.pump())
        if deferred:
            log.info("webhook_attempts_deferred", count=deferred, reason="lease nearly spent")

    def _spawn(self, a: Attempt) -> None:
        task = asyncio.create_task(self._run_slot(a))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run_slot(self, a: Attempt) -> None:
        """Run `a`, then, after a success, the attempt its slot was handed to, in this same
        task (a task per attempt costs more than the bookkeeping of a short POST)."""
        nxt: Attempt | None = a
        while nxt is not None:
            nxt = await self._run_in_slot(nxt)

    async def _run_in_slot(self, a: Attempt) -> Attempt | None:
        """Run `a` in the slot it holds; returns the attempt to run next in this task."""
        released = False

        def release(keep: bool = False) -> Attempt | None:
            """The endpoint's slot frees as soon as the POST is over (recording needs none).
            With `keep`, an attempt the slot is handed to is returned (to run in this task)
            rather than started, if its lease is fresh enough."""
            nonlocal released
            if released:
                return None
            released = True
            cap = self.capacity
            handed = cap.release(a.endpoint_id)
            successor: Attempt | None = None
            if handed is None:
                for ready in cap.pump():
                    self._start(ready)
            elif keep and handed.deadline - asyncio.get_running_loop().time() >= self.start_margin:
                successor = handed
            else:
                self._start(handed)
            # Claim again when a slot is free, or once the queue is half spent (not per
            # POST), if anything may be due.
            if self._maybe_due and (
                    handed is None or cap.queued(a.endpoint_id) == cap.claim_queue_limit // 2):
                self.wake.set()
            if cap.total == 0:  # the last POST ended: no success is coming to fill a batch
                self.recorder.hurry()
            return successor

        try:
            return await self._run_attempt(a, release)
        finally:
            release()  # unsent, crashed or cancelled: the slot goes on

    # --- one attempt ----------------------------------------------------------------------

    def _signer(self, secret: str, previous: str | None) -> Signer | None:
        """The signer for these encrypted secrets (decrypted and keyed once, then cached);
        None when a secret is unreadable with the configured keys."""
        key = (secret, previous)
        if key in self._signers:
            return self._signers[key]
        if len(self._signers) > 10_000:
            self._signers.clear()
        try:
            plain = [self.vault.decrypt(secret)]
            if previous is not None:
                plain.append(self.vault.decrypt(previous))
            signer: Signer | None = Signer(plain)
        except ValueError:
            signer = None
        self._signers[key] = signer
        return signer

    def _attempt_of(self, ep: Row, row: Row, body: bytes | None, deadline: float) -> Attempt:
        """`ep`: the endpoint's signing columns; `row`: the claimed attempt; `deadline`: when
        the claim's lease runs out, in event-loop time.

        No signer (an unreadable secret) makes the attempt fail without a POST.
        """
        return Attempt(
            row["id"], row["endpoint_id"], row["event_id"], row["event_type"], row["attempt"],
            row["next_attempt_at"], ep["workspace_id"], ep["url"], bool(ep["usable"]),
            self._signer(ep["secret"], ep["previous_secret"]), body, deadline,
        )

    async def _run_attempt(self, a: Attempt, release: Release) -> Attempt | None:
        """Make attempt `a`; returns the attempt to run next in this task (after a success)."""
        try:
            if not a.usable:
                await self.recorder.failed_unsent(a, "endpoint disabled or deleted")
            elif a.body is None:
                await self.recorder.failed_unsent(a, "event payload missing")
            elif a.signer is None:
                await self.recorder.failed_unsent(a, "signing secret unreadable with the configured keys")
            else:
                return await self.deliver(a, release)
        except LostClaim:
            log.info("webhook_claim_lost", delivery_id=a.id)
        except Exception as exc:  # the row stays pending and is retried after its lease
            log.error("webhook_attempt_crashed", delivery_id=a.id, error=repr(exc))
        return None

    async def deliver(self, a: Attempt, release: Release) -> Attempt | None:
        assert self._session is not None and a.body is not None and a.signer is not None
        headers = a.signer.headers(a.event_id, a.body)
        result = await egress.post(
            self._session, a.url, a.body, headers, self.settings.webhooks_allow_private
        )
        decision = decide(result, a.attempt, self.settings.webhook_retry_schedule, self.rng)
        if decision.succeeded:
            _SUCCEEDED.inc()
            self.recorder.success(a, result)  # batched; the next POST does not wait for it
            return release(True)
        release()
        _FAILED.inc()
        retry_in = await self.recorder.failure(a, result, decision)
        if retry_in is not None:
            self._note_due(retry_in)
        return None
