"""The send endpoint's deferred key check: a key this API process checked before is checked
again by the router in its identity read, and must answer exactly as the API's own check."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from gateway import keys
from gateway.db import workspaces as wsdb
from tests.integration.send.conftest import RouterControl, World

pytestmark = pytest.mark.integration

Client = TestClient  # type: ignore[type-arg]

NEW = {"subject": "Hello", "text": "Hi there"}


async def post(client: Client, world: World, body: dict[str, Any],
               headers: dict[str, str]) -> tuple[int, Any]:
    resp = await client.post(world.url, json=body, headers=headers)
    return resp.status, await resp.json()


def forged(key: str) -> str:
    """Same public prefix, different secret part."""
    head = keys.public_prefix(key)
    rest = key[len(head):]
    return head + ("A" if rest[0] != "A" else "B") + rest[1:]


async def test_revoked_key_is_401_at_once(client: Client, world: World, router: RouterControl,
                                          pool: asyncpg.Pool) -> None:
    headers = world.tenant.headers
    assert (await post(client, world, {"to": "a@northwind.example", **NEW}, headers))[0] == 202
    assert (await post(client, world, {"to": "b@northwind.example", **NEW}, headers))[0] == 202
    assert await wsdb.revoke_key(pool, keys.public_prefix(world.tenant.key))
    status, body = await post(client, world, {"to": "c@northwind.example", **NEW}, headers)
    assert status == 401 and body["code"] == 401
    # the error wins over the body's, as with a key checked by the API itself
    status, body = await post(client, world, {"to": "not an address", **NEW}, headers)
    assert status == 401
    assert await pool.fetchval("SELECT count(*) FROM messages") == 2


async def test_forged_key_with_a_known_prefix_is_401(client: Client, world: World,
                                                     router: RouterControl, pool: asyncpg.Pool) -> None:
    ok = await post(client, world, {"to": "a@northwind.example", **NEW}, world.tenant.headers)
    assert ok[0] == 202
    bad = {"X-Api-Key": forged(world.tenant.key)}
    status, body = await post(client, world, {"to": "b@northwind.example", **NEW}, bad)
    assert status == 401 and body["code"] == 401
    status, _ = await post(client, world, {"to": "b@northwind.example"}, bad)  # invalid body too
    assert status == 401
    assert await pool.fetchval("SELECT count(*) FROM messages") == 1


async def test_platform_key_foreign_workspace_is_404(client: Client, world: World,
                                                     router: RouterControl, pool: asyncpg.Pool) -> None:
    key, _ = await wsdb.insert_key(pool, kind="platform", operator_id=world.tenant.operator_id,
                                   workspace_id=None, name="platform")
    mine = {"X-Api-Key": key, "X-Workspace-Id": world.tenant.workspace_id}
    assert (await post(client, world, {"to": "a@northwind.example", **NEW}, mine))[0] == 202
    assert (await post(client, world, {"to": "b@northwind.example", **NEW}, mine))[0] == 202
    other_op = await wsdb.create_operator(pool)
    foreign = await wsdb.create_workspace(pool, other_op, "Other")
    theirs = {"X-Api-Key": key, "X-Workspace-Id": foreign["id"]}
    status, body = await post(client, world, {"to": "c@northwind.example", **NEW}, theirs)
    assert status == 404 and body["code"] == 404
    missing = {"X-Api-Key": key}
    status, _ = await post(client, world, {"to": "c@northwind.example", **NEW}, missing)
    assert status == 400
    assert await pool.fetchval("SELECT count(*) FROM messages") == 2
