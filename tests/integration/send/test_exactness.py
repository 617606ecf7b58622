"""Cap accounting is exact across router processes under concurrency."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from gateway.config import Settings
from tests.integration.send.conftest import make_world

pytestmark = pytest.mark.integration


@pytest.mark.timeout(180)
async def test_two_routers_200_sends_cap_50(
    client: TestClient,  # type: ignore[type-arg]
    pool: asyncpg.Pool,
    settings: Settings,
    router_processes: Callable[[int], Awaitable[None]],
) -> None:
    world = await make_world(pool, settings, identity_cap=50, mailbox_caps=(40, 40, 40))
    await router_processes(2)

    async def one(i: int) -> tuple[int, list[str]]:
        resp = await client.post(
            world.url, json={"to": f"lead{i}@northwind.example", "subject": "Hi", "text": "x"},
            headers=world.tenant.headers,
        )
        body = await resp.json()
        return resp.status, [m.get("reason", m["status"]) for m in body["messages"]]

    results = await asyncio.gather(*(one(i) for i in range(200)))
    statuses = Counter(s for s, _ in results)
    outcomes = Counter(o for _, os in results for o in os)
    assert statuses == {202: 50, 429: 150}
    assert outcomes == {"accepted": 50, "cap_exceeded": 150}
    assert await pool.fetchval("SELECT count(*) FROM messages") == 50
    assert await pool.fetchval("SELECT used FROM daily_usage WHERE subject_id = $1", world.identity_id) == 50
    per_mailbox = await pool.fetch(
        "SELECT subject_id, used FROM daily_usage WHERE subject_id = ANY($1::text[])", world.mailboxes)
    assert sum(r["used"] for r in per_mailbox) == 50 and all(r["used"] <= 40 for r in per_mailbox)
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE routing_key = 'deliver'") == 50


@pytest.mark.timeout(180)
async def test_two_routers_mailbox_caps_exact(
    client: TestClient,  # type: ignore[type-arg]
    pool: asyncpg.Pool,
    settings: Settings,
    router_processes: Callable[[int], Awaitable[None]],
) -> None:
    world = await make_world(pool, settings, identity_cap=1000, mailbox_caps=(10, 10, 10))
    await router_processes(2)
    to = [f"lead{i}@northwind.example" for i in range(100)]

    async def batch(part: list[str]) -> list[str]:
        resp = await client.post(world.url, json={"to": part, "subject": "Hi", "text": "x"},
                                 headers=world.tenant.headers)
        return [m.get("reason", m["status"]) for m in (await resp.json())["messages"]]

    results = await asyncio.gather(*(batch(to[i:i + 4]) for i in range(0, 100, 4)))
    assert Counter(o for r in results for o in r) == {"accepted": 30, "cap_exceeded": 70}
    assert await pool.fetchval("SELECT used FROM daily_usage WHERE subject_id = $1", world.identity_id) == 30
