"""Batched claims and records of the delivery role (`gateway.delivery.batch.Coalescer` over
`store.claim_many` / `store.record_sent_many`), against the real database, broker and an SMTP sink.

Concurrent `Deliverer.deliver` calls started together share one claim statement: all of them
are queued before the first statement runs, so a `gather` of N deliveries is one claim batch.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from consumers.runner import Context
from gateway import events, outbox
from gateway.config import Settings
from gateway.delivery import store
from gateway.delivery.worker import Deliverer
from tests.integration.delivery.conftest import running
from tests.integration.delivery.support import EventTap, Staged, message_row, stage_message, world
from tests.support.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration


def _deliverer(ctx: Context, settings: Settings | None = None) -> Deliverer:
    return Deliverer(settings or ctx.settings, ctx.pool, ctx.publisher, ctx.topology, ctx.vault)


def _sent_ids(sink: SmtpSink) -> list[str]:
    return [str(m.message["Message-ID"]) for m in sink.messages]


async def _count(pool: asyncpg.Pool, sql: str, *args: Any) -> int:
    n: int = await pool.fetchval(sql, *args)
    return n


async def _sent_events(pool: asyncpg.Pool) -> dict[str, dict[str, Any]]:
    """Stored email.sent data by message id (asserting one event per message)."""
    rows = await pool.fetch("SELECT data FROM events WHERE type = 'email.sent'")
    by_id = {r["data"]["messageId"]: r["data"] for r in rows}
    assert len(by_id) == len(rows), "a message has more than one email.sent"
    return by_id


async def _assert_event_data(pool: asyncpg.Pool, data: dict[str, Any]) -> None:
    async with pool.acquire() as conn:
        shared = await events.message_event_data(conn, data["messageId"])
    assert {k: v for k, v in data.items() if k not in ("sentAt", "smtpResponse")} == shared
    assert data["smtpResponse"].startswith("250") and data["sentAt"].endswith("Z")


class _Reject:
    """A CHECK constraint that makes one message's row refuse one status (a row gone invalid)."""

    def __init__(self, pool: asyncpg.Pool, message_id: str, status: str) -> None:
        self.pool, self.name = pool, f"t_reject_{status}"
        self.sql = (f"ALTER TABLE messages ADD CONSTRAINT {self.name}"
                    f" CHECK (id <> '{message_id}' OR status <> '{status}') NOT VALID")

    async def __aenter__(self) -> None:
        await self.pool.execute(self.sql)

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.execute(f"ALTER TABLE messages DROP CONSTRAINT {self.name}")


# --- (a) the same message twice in one batch -----------------------------------------------


async def test_claim_many_claims_a_repeated_id_once(ctx: Context, sink: SmtpSink) -> None:
    w = await world(ctx.pool, ctx.vault, port=sink.port)
    st = await stage_message(ctx.pool, None, w)
    rows = await store.claim_many(ctx.pool, [st.id, st.id], 60)
    assert rows[0] is not None and rows[0]["id"] == st.id and rows[1] is None
    row = await message_row(ctx.pool, st.id)
    assert (row["status"], row["attempts"]) == ("sending", 1)


async def test_same_message_twice_in_one_batch_is_sent_once(
    ctx: Context, sink: SmtpSink, tap: EventTap
) -> None:
    w = await world(ctx.pool, ctx.vault, port=sink.port)
    st = await stage_message(ctx.pool, None, w)
    d = _deliverer(ctx)
    try:
        outcomes = await asyncio.gather(d.deliver(st.id), d.deliver(st.id))
        assert d.claims.batches == 1  # both asks went into one claim statement
    finally:
        await d.close()
    results = sorted(o.result for o in outcomes)
    assert "sent" in results and results.count("sent") == 1
    assert set(results) - {"sent"} <= {"deferred", "skipped"}
    [ev] = await tap.wait("email.sent")
    assert ev["data"]["messageId"] == st.id
    assert _sent_ids(sink) == [st.rfc_message_id]
    row = await message_row(ctx.pool, st.id)
    assert (row["status"], row["attempts"]) == ("sent", 1)
    assert list(await _sent_events(ctx.pool)) == [st.id]
    assert await _count(ctx.pool, "SELECT sent_total FROM mailboxes WHERE id = $1", w.mailbox_id) == 1


# --- (b) many concurrent deliveries ---------------------------------------------------------


async def test_forty_concurrent_tasks_each_sent_exactly_once(
    ctx: Context, sink: SmtpSink, tap: EventTap, settings: Settings
) -> None:
    # Two mailboxes, several messages per conversation: the batch statement groups its
    # counters per mailbox and per conversation.
    worlds = [await world(ctx.pool, ctx.vault, port=sink.port, email=e)
              for e in ("alice@example.test", "carol@example.test")]
    staged: list[Staged] = []
    for w in worlds:
        for _ in range(4):
            first = await stage_message(ctx.pool, None, w)
            staged.append(first)
            for _ in range(4):
                staged.append(await stage_message(ctx.pool, None, w, conversation_id=first.conversation_id))
    assert len(staged) == 40
    busy = settings.model_copy(update={"delivery_prefetch": 16})
    async with running(ctx, busy):
        await outbox.publish_rows(ctx.pool, ctx.publisher, [s.outbox_id for s in staged])  # all at once
        got = await tap.wait("email.sent", 40, timeout=60)
        await sink.wait_for(40, timeout=30)
    assert sorted(_sent_ids(sink)) == sorted(s.rfc_message_id for s in staged)  # each exactly once
    assert sorted(e["data"]["messageId"] for e in got) == sorted(s.id for s in staged)
    stored = await _sent_events(ctx.pool)
    assert set(stored) == {s.id for s in staged}
    assert await _count(ctx.pool, "SELECT count(*) FROM outbox WHERE routing_key = 'email.sent'") == 40
    for s in staged:
        row = await message_row(ctx.pool, s.id)
        assert (row["status"], row["attempts"], row["sending_until"]) == ("sent", 1, None), s.id
        await _assert_event_data(ctx.pool, stored[s.id])
    for w in worlds:
        assert await _count(ctx.pool, "SELECT sent_total FROM mailboxes WHERE id = $1", w.mailbox_id) == 20
    # Every conversation's activity moved to one of its sends (staged a day in the past).
    stale = await _count(
        ctx.pool,
        "SELECT count(*) FROM conversations c WHERE c.id = ANY($1::text[]) AND c.last_activity_at NOT IN"
        " (SELECT sent_at FROM messages m WHERE m.conversation_id = c.id)",
        sorted({s.conversation_id for s in staged}))
    assert stale == 0


async def test_concurrent_deliveries_share_one_claim_and_are_each_sent_once(
    ctx: Context, sink: SmtpSink, tap: EventTap
) -> None:
    w = await world(ctx.pool, ctx.vault, port=sink.port)
    staged = [await stage_message(ctx.pool, None, w) for _ in range(24)]
    d = _deliverer(ctx)
    try:
        outcomes = await asyncio.gather(*(d.deliver(s.id) for s in staged))
        assert d.claims.batches == 1
    finally:
        await d.close()
    assert [o.result for o in outcomes] == ["sent"] * 24
    await tap.wait("email.sent", 24)
    assert sorted(_sent_ids(sink)) == sorted(s.rfc_message_id for s in staged)
    assert set(await _sent_events(ctx.pool)) == {s.id for s in staged}
    assert await _count(ctx.pool, "SELECT sent_total FROM mailboxes WHERE id = $1", w.mailbox_id) == 24


# --- (c) one bad row in a batch -------------------------------------------------------------


async def test_failing_row_falls_back_per_item_and_the_others_succeed(ctx: Context, sink: SmtpSink) -> None:
    w = await world(ctx.pool, ctx.vault, port=sink.port)
    staged = [await stage_message(ctx.pool, None, w) for _ in range(6)]
    bad = staged[2]
    good = [s for s in staged if s is not bad]
    d = _deliverer(ctx)
    try:
        # Claims: the batch statement fails on the bad row; each message is claimed on its own.
        async with _Reject(ctx.pool, bad.id, "sending"):
            claimed = await asyncio.gather(*(d.claims(s.id) for s in staged), return_exceptions=True)
        assert isinstance(claimed[2], asyncpg.CheckViolationError)
        rows = [r for r in claimed if not isinstance(r, BaseException)]
        assert [r["id"] for r in rows if r is not None] == [s.id for s in good]
        assert (await message_row(ctx.pool, bad.id))["status"] == "queued"
        bad_row = await store.claim(ctx.pool, bad.id, 60)
        assert bad_row is not None

        # Records: the multi-row statement fails on the bad row and rolls back entirely; the
        # others are recorded one by one, once each.
        async with _Reject(ctx.pool, bad.id, "sent"):
            items = [*[(r, "250 2.0.0 Ok", 250) for r in rows], (bad_row, "250 2.0.0 Ok", 250)]
            recorded = await asyncio.gather(*(d.sent(i) for i in items), return_exceptions=True)
        assert d.sent.batches >= 1
    finally:
        await d.close()
    assert isinstance(recorded[-1], asyncpg.CheckViolationError)
    ok = [r for r in recorded if not isinstance(r, BaseException)]
    assert len(ok) == 5
    for s in good:
        row = await message_row(ctx.pool, s.id)
        assert (row["status"], row["attempts"], row["smtp_code"]) == ("sent", 1, 250)
    bad_now = await message_row(ctx.pool, bad.id)
    assert bad_now["status"] == "sending" and bad_now["sent_at"] is None
    stored = await _sent_events(ctx.pool)
    assert set(stored) == {s.id for s in good}
    for data in stored.values():
        await _assert_event_data(ctx.pool, data)
    # Returned outbox rows are the staged ones, each with its own event.
    outbox_rows = await ctx.pool.fetch("SELECT id, message_id FROM outbox WHERE routing_key = 'email.sent'")
    assert sorted((r["id"], r["message_id"]) for r in outbox_rows) == sorted(
        (oid, event["id"]) for oid, event in ok)  # type: ignore[misc]
    assert await _count(ctx.pool, "SELECT sent_total FROM mailboxes WHERE id = $1", w.mailbox_id) == 5


async def test_deleted_mailbox_in_a_batch_fails_alone(ctx: Context, sink: SmtpSink, tap: EventTap) -> None:
    w = await world(ctx.pool, ctx.vault, port=sink.port)
    gone = await world(ctx.pool, ctx.vault, port=sink.port, email="gone@example.test")
    staged = [await stage_message(ctx.pool, None, w) for _ in range(3)]
    orphan = await stage_message(ctx.pool, None, gone)
    await ctx.pool.execute("UPDATE mailboxes SET deleted_at = now() WHERE id = $1", gone.mailbox_id)
    d = _deliverer(ctx)
    try:
        outcomes = await asyncio.gather(*(d.deliver(s.id) for s in [*staged[:2], orphan, staged[2]]))
        assert d.claims.batches == 1
    finally:
        await d.close()
    assert [o.result for o in outcomes] == ["sent", "sent", "failed", "sent"]
    [failed] = await tap.wait("email.failed")
    assert failed["data"]["messageId"] == orphan.id
    await tap.wait("email.sent", 3)
    assert sorted(_sent_ids(sink)) == sorted(s.rfc_message_id for s in staged)
    row = await message_row(ctx.pool, orphan.id)
    assert row["status"] == "failed" and "no longer exists" in row["error"]
    assert set(await _sent_events(ctx.pool)) == {s.id for s in staged}


# --- (d) a live lease in a batch ------------------------------------------------------------


async def test_live_lease_in_a_batch_is_deferred_not_sent(
    ctx: Context, sink: SmtpSink, tap: EventTap
) -> None:
    w = await world(ctx.pool, ctx.vault, port=sink.port)
    staged = [await stage_message(ctx.pool, None, w) for _ in range(4)]
    held = staged[1]
    until = await ctx.pool.fetchval(
        "UPDATE messages SET status = 'sending', attempts = 1, sending_until = now() + interval '60 s'"
        " WHERE id = $1 RETURNING sending_until", held.id)
    d = _deliverer(ctx)
    try:
        outcomes = await asyncio.gather(*(d.deliver(s.id) for s in staged))
        assert d.claims.batches == 1
    finally:
        await d.close()
    assert [o.result for o in outcomes] == ["sent", "deferred", "sent", "sent"]
    await tap.wait("email.sent", 3)
    assert held.rfc_message_id not in _sent_ids(sink)
    assert sorted(_sent_ids(sink)) == sorted(s.rfc_message_id for s in staged if s is not held)
    row = await message_row(ctx.pool, held.id)
    assert (row["status"], row["attempts"], row["sending_until"]) == ("sending", 1, until)
    assert held.id not in await _sent_events(ctx.pool)
    assert await _count(ctx.pool, "SELECT sent_total FROM mailboxes WHERE id = $1", w.mailbox_id) == 3
