"""The scheduler's outbox relay: a writer killed between commit and publish is delivered once."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

from consumers import scheduler
from consumers.runner import close_context, open_context
from gateway import outbox
from gateway.bus.topology import DELIVER_KEY, DELIVERY
from gateway.config import Settings
from gateway.timefmt import now
from tests.integration.inbox.conftest import Setup, conversation, drain, fast

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


async def _killed_writer(settings: Settings, setup: Setup, conv: str) -> int:
    env = {**os.environ, "MAILGW_DATABASE_URL": settings.database_url,
           "MAILGW_AMQP_URL": settings.amqp_url, "MAILGW_AMQP_PREFIX": settings.amqp_prefix,
           "MAILGW_DATA_DIR": str(settings.data_dir), "MAILGW_SECRET_KEY": "test-secret-key",
           "MAILGW_LOG_FORMAT": "json"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.inbox.crash_writer", setup.ws, conv,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        assert line.startswith(b"COMMITTED "), line
    finally:
        proc.kill()
        await proc.wait()
    return int(line.split()[1])


async def test_row_committed_but_never_published_is_relayed_once(
    pool: asyncpg.Pool, settings: Settings, setup: Setup
) -> None:
    conv = await conversation(pool, setup)
    outbox_id = await _killed_writer(settings, setup, conv)
    row = await pool.fetchrow("SELECT * FROM outbox WHERE id = $1", outbox_id)
    assert row["published_at"] is None and row["routing_key"] == DELIVER_KEY
    msg_id = await pool.fetchval("SELECT id FROM messages WHERE conversation_id = $1", conv)
    assert row["message_id"] == f"deliver:{msg_id}"

    # Within the grace period the relay leaves the row to its writer.
    patient = await open_context(settings.model_copy(update={"outbox_grace": 3600.0}), "patient")
    try:
        assert await scheduler.tick(scheduler.Deps.of(patient)) == (0, 0)
    finally:
        await close_context(patient)
    assert await drain(settings, "mailgw.delivery") == []

    # Two schedulers relay concurrently, several times over: the task arrives once.
    contexts = [await open_context(fast(settings), f"relay{i}") for i in range(2)]
    try:
        deps = [scheduler.Deps.of(c) for c in contexts]
        results = await asyncio.gather(*(scheduler.tick(d) for d in deps * 3))
    finally:
        for c in contexts:
            await close_context(c)
    assert sum(relayed for _, relayed in results) == 1
    tasks = await drain(settings, "mailgw.delivery")
    assert [orjson.loads(t.body) for t in tasks] == [{"messageId": msg_id}]
    assert await pool.fetchval("SELECT published_at FROM outbox WHERE id = $1", outbox_id) is not None


async def test_send_at_rows_wait_for_their_time(pool: asyncpg.Pool, settings: Settings) -> None:
    async with pool.acquire() as conn, conn.transaction():
        later = await outbox.stage(conn, DELIVERY, DELIVER_KEY, b'{"messageId": "msg_later"}',
                                   message_id="deliver:msg_later", available_at=now() + timedelta(hours=1))
    ctx = await open_context(settings, "sched")
    try:
        deps = scheduler.Deps.of(ctx)
        assert await scheduler.tick(deps) == (0, 0)
        await pool.execute("UPDATE outbox SET available_at = now() WHERE id = $1", later)
        assert await scheduler.tick(deps) == (0, 1)
        assert await scheduler.tick(deps) == (0, 0)
    finally:
        await close_context(ctx)
    tasks = await drain(settings, "mailgw.delivery")
    assert [t.message_id for t in tasks] == ["deliver:msg_later"]
