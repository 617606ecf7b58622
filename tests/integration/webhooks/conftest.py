"""Webhook fixtures: real aiohttp receivers on 127.0.0.1, the real dispatcher role in-process,
and events published through the real broker (events.stage + outbox.publish_rows)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from consumers import dispatcher as dispatcher_role
from consumers.runner import Context, close_context, open_context
from gateway import events, outbox
from gateway.config import Settings
from tests.support.factories import Tenant, tenant

Behaviour = Callable[[int, web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when the request arrived
    path: str


async def always_ok(n: int, request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


@dataclass
class Receiver:
    """A webhook receiver; `behave(n, request)` answers the n-th request (1-based)."""

    behave: Behaviour = always_ok
    seen: list[Seen] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with self.changed:
            self.seen.append(Seen(dict(request.headers), body, time.monotonic(), request.path))
            n = len(self.seen)
            self.changed.notify_all()
        return await self.behave(n, request)

    async def wait_for(self, count: int, within: float = 15.0) -> list[Seen]:
        async with asyncio.timeout(within), self.changed:
            await self.changed.wait_for(lambda: len(self.seen) >= count)
            return list(self.seen)


@pytest.fixture
async def make_receiver() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    servers: list[TestServer] = []

    async def make(behave: Behaviour = always_ok) -> Receiver:
        receiver = Receiver(behave)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", receiver.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        receiver.url = str(server.make_url("/hook"))
        return receiver

    yield make
    for server in servers:
        await server.close()


@pytest.fixture
async def ws(pool: asyncpg.Pool) -> Tenant:
    return await tenant(pool)


@pytest.fixture
async def start_dispatcher(settings: Settings) -> AsyncIterator[Callable[..., Awaitable[Context]]]:
    """Run the real dispatcher role in this process (settings overridable per test)."""
    running: list[tuple[Context, asyncio.Event, asyncio.Task[None]]] = []

    async def start(**overrides: Any) -> Context:
        ctx = await open_context(settings.model_copy(update=overrides), "test-dispatcher")
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher_role.run(ctx, stop))
        running.append((ctx, stop, task))
        return ctx

    yield start
    for ctx, stop, task in running:
        stop.set()
        await asyncio.wait_for(task, 30)
        await close_context(ctx)


async def publish_event(ctx: Context, event_type: str, workspace_id: str,
                        data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Stage an event the way producers do and publish it to the broker after commit."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        event, row_id = await events.stage(conn, event_type, workspace_id, data or {"n": 1})
    await outbox.publish_rows(ctx.pool, ctx.publisher, [row_id])
    return event


async def create_hook(client: TestClient, t: Tenant, url: str, **fields: Any) -> dict[str, Any]:  # type: ignore[type-arg]
    resp = await client.post("/v1/webhooks", json={"url": url, **fields}, headers=t.headers)
    assert resp.status == 201, await resp.text()
    data: dict[str, Any] = (await resp.json())["data"]
    return data


async def deliveries(client: TestClient, t: Tenant, hook_id: str) -> list[dict[str, Any]]:  # type: ignore[type-arg]
    resp = await client.get(f"/v1/webhooks/{hook_id}/deliveries", headers=t.headers)
    assert resp.status == 200
    items: list[dict[str, Any]] = (await resp.json())["data"]
    return items


async def settled(client: TestClient, t: Tenant, hook_id: str, count: int,  # type: ignore[type-arg]
                  within: float = 20.0) -> list[dict[str, Any]]:
    """The delivery log once it holds `count` attempts and none is pending (bounded wait)."""
    deadline = time.monotonic() + within
    while True:
        items = await deliveries(client, t, hook_id)
        if len(items) >= count and all(i["status"] != "pending" for i in items):
            return items
        if time.monotonic() > deadline:
            raise AssertionError(f"delivery log did not settle: {items}")
        await asyncio.sleep(0.05)  # polling the log: the condition is checked every round
