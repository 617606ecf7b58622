"""A dispatcher killed mid-delivery loses nothing: a restarted one sends with the same webhook-id."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from consumers.runner import close_context, open_context
from gateway.config import Settings
from tests.integration.webhooks.conftest import Receiver, create_hook, publish_event, settled
from tests.support.factories import Tenant
from tests.support.processes import role_env

pytestmark = pytest.mark.integration

MAILGW = Path(sys.executable).with_name("mailgw")


def dispatcher_env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    return role_env(
        settings, MAILGW_DATA_DIR=str(tmp_path / "data"), MAILGW_WEBHOOKS_ALLOW_PRIVATE="true",
        MAILGW_WEBHOOK_TIMEOUT="3",  # the claim's lease: 1.5 × 3 + 2 = 6.5 s
        MAILGW_WEBHOOK_RETRY_SCHEDULE="1,2",
    )


@pytest.fixture
async def spawn(
    settings: Settings, tmp_path: Path
) -> AsyncIterator[Callable[[], Awaitable[asyncio.subprocess.Process]]]:
    procs: list[asyncio.subprocess.Process] = []

    async def start() -> asyncio.subprocess.Process:
        log = open(tmp_path / f"dispatcher{len(procs)}.log", "wb")  # noqa: ASYNC230
        proc = await asyncio.create_subprocess_exec(
            str(MAILGW), "worker", "dispatcher", env=dispatcher_env(settings, tmp_path),
            stdout=log, stderr=log,
        )
        log.close()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_killed_dispatcher_delivery_is_sent_again_with_the_same_id(
    client: TestClient, ws: Tenant, settings: Settings, pool: asyncpg.Pool,  # type: ignore[type-arg]
    make_receiver: Callable[..., Awaitable[Receiver]],
    spawn: Callable[[], Awaitable[asyncio.subprocess.Process]],
) -> None:
    release = asyncio.Event()

    async def hold_first(n: int, request: web.Request) -> web.StreamResponse:
        if n == 1:
            await release.wait()  # the first dispatcher dies while this request is open
        return web.Response(text="ok")

    receiver = await make_receiver(hold_first)
    hook = await create_hook(client, ws, receiver.url)
    ctx = await open_context(settings, "test-publisher")
    try:
        first = await spawn()
        event = await publish_event(ctx, "email.sent", ws.workspace_id)
        try:
            seen = await receiver.wait_for(1, within=30)
            first.send_signal(signal.SIGKILL)
            assert await asyncio.wait_for(first.wait(), 10) == -signal.SIGKILL
            row = await pool.fetchrow(
                "SELECT attempt, status FROM webhook_deliveries WHERE event_id = $1", event["id"])
            assert row is not None and (row["attempt"], row["status"]) == (1, "pending")

            await spawn()
            seen = await receiver.wait_for(2, within=30)
        finally:
            release.set()
        assert [s.headers["webhook-id"] for s in seen] == [event["id"], event["id"]]
        assert seen[0].body == seen[1].body
        log = await settled(client, ws, hook["id"], 1)
        assert [(d["attempt"], d["status"]) for d in log] == [(1, "succeeded")]
        # The event was acked by the first dispatcher: nothing left in its queue.
        channel = await ctx.amqp.channel()
        queue = await channel.declare_queue(ctx.topology.name("mailgw.dispatcher"), passive=True)
        assert queue.declaration_result.message_count == 0
        await channel.close()
    finally:
        await close_context(ctx)
