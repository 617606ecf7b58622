"""Idempotency-Key: replay, conflicts, 50 concurrent duplicates, and the router-down retry."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from gateway.send.idempotency import request_hash
from tests.integration.send.conftest import RouterControl, World

pytestmark = pytest.mark.integration

Client = TestClient  # type: ignore[type-arg]
BODY = {"to": "morgan@northwind.example", "subject": "Hello", "text": "Hi"}


async def post(client: Client, world: World, body: dict[str, Any], key: str) -> tuple[int, Any, Any]:
    resp = await client.post(world.url, json=body, headers={**world.tenant.headers, "Idempotency-Key": key})
    return resp.status, await resp.json(), resp.headers


async def counts(pool: asyncpg.Pool) -> tuple[int, int, int]:
    row = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM conversations) AS c, (SELECT count(*) FROM messages) AS m,"
        " (SELECT count(*) FROM outbox WHERE routing_key = 'deliver') AS o")
    return row["c"], row["m"], row["o"]


async def test_replay_and_different_body(client: Client, world: World, router: RouterControl,
                                         pool: asyncpg.Pool) -> None:
    status, first, headers = await post(client, world, BODY, "order-1")
    assert status == 202 and "Idempotent-Replayed" not in headers
    # same body, keys in another order: replayed, identical status and body
    status, again, headers = await post(client, world, dict(reversed(list(BODY.items()))), "order-1")
    assert status == 202 and again == first and headers["Idempotent-Replayed"] == "true"
    status, body, _ = await post(client, world, {**BODY, "text": "changed"}, "order-1")
    assert status == 409 and "different" in body["message"]
    assert await counts(pool) == (1, 1, 1)
    # the key is scoped to the identity: the same key elsewhere is a new send
    status, _, headers = await post(client, world, BODY, "order-2")
    assert status == 202 and "Idempotent-Replayed" not in headers
    # a 429 is stored and replayed too
    await pool.execute("UPDATE identities SET daily_cap = 2 WHERE id = $1", world.identity_id)
    status, rejected, _ = await post(client, world, {**BODY, "to": "x@northwind.example"}, "order-3")
    assert status == 429
    await pool.execute("UPDATE identities SET daily_cap = 100 WHERE id = $1", world.identity_id)
    status, replay, headers = await post(client, world, {**BODY, "to": "x@northwind.example"}, "order-3")
    assert status == 429 and replay == rejected and headers["Idempotent-Replayed"] == "true"


async def test_in_flight_key_is_409(client: Client, world: World, router: RouterControl,
                                    pool: asyncpg.Pool) -> None:
    # a claim of a request still being processed (made by another API process)
    await pool.execute(
        "INSERT INTO idempotency_keys (scope, key, request_hash, state, expires_at)"
        " VALUES ($1, 'busy', $2, 'processing', now() + interval '1 day')",
        world.identity_id, request_hash(BODY))
    status, body, _ = await post(client, world, BODY, "busy")
    assert status == 409 and "still being processed" in body["message"]
    # an expired key is as good as new
    await pool.execute("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")
    status, _, headers = await post(client, world, BODY, "busy")
    assert status == 202 and "Idempotent-Replayed" not in headers


async def test_fifty_concurrent_duplicates_send_once(client: Client, world: World, router: RouterControl,
                                                      pool: asyncpg.Pool) -> None:
    results = await asyncio.gather(*(post(client, world, BODY, "burst") for _ in range(50)))
    statuses = [s for s, _, _ in results]
    assert set(statuses) <= {202, 409} and 202 in statuses
    bodies = [b for s, b, _ in results if s == 202]
    assert all(b == bodies[0] for b in bodies)
    for s, b, _ in results:
        if s == 409:
            assert "still being processed" in b["message"]
    assert await counts(pool) == (1, 1, 1)
    used = await pool.fetchval("SELECT used FROM daily_usage WHERE subject_id = $1", world.identity_id)
    assert used == 1
    # after completion every retry replays the one send
    status, body, headers = await post(client, world, BODY, "burst")
    assert status == 202 and body == bodies[0] and headers["Idempotent-Replayed"] == "true"


async def test_router_down_503_then_one_send(client: Client, world: World, router_ctl: RouterControl,
                                             pool: asyncpg.Pool) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, body, headers = await post(client, world, BODY, "outage")
    elapsed = loop.time() - started
    assert status == 503 and body["code"] == 503 and int(headers["Retry-After"]) >= 1
    assert elapsed < 5.0 + 2.0  # settings.rpc_timeout plus slack
    assert await counts(pool) == (0, 0, 0)
    await router_ctl.start()  # the queued command is now past its deadline
    status, first, headers = await post(client, world, BODY, "outage")
    assert status == 202 and first["accepted"] == 1
    status, again, headers = await post(client, world, BODY, "outage")
    assert status == 202 and again == first and headers["Idempotent-Replayed"] == "true"
    assert await counts(pool) == (1, 1, 1)
