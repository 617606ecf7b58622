"""Tenant isolation on every setup route: another workspace's resource is a 404 byte-identical
to a missing one; 400 without X-Workspace-Id; 401 without a valid key; 403 for platform-only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from gateway.db import workspaces as wsdb
from tests.integration.api.conftest import create_mailbox
from tests.support import factories
from tests.support.factories import Tenant

pytestmark = pytest.mark.integration


@dataclass
class World:
    a: Tenant
    b: Tenant
    a_platform: str  # owns workspace a only
    b_platform: str  # owns workspace b only
    b_mailbox: str
    b_handle: str
    b_suppressed: str
    b_key_prefix: str


async def _platform_for(pool: asyncpg.Pool, operator_id: str) -> str:
    key, _ = await wsdb.insert_key(
        pool, kind="platform", operator_id=operator_id, workspace_id=None, name="p"
    )
    return key


@pytest.fixture
async def world(client: TestClient, pool: asyncpg.Pool) -> World:  # type: ignore[type-arg]
    a = await factories.tenant(pool, "A")
    b = await factories.tenant(pool, "B")
    mbx = (await create_mailbox(client, b, "b@globex.example"))["id"]
    resp = await client.post(
        "/v1/identities", headers=b.headers, json={"handle": "b@globex.example", "mailboxIds": [mbx]}
    )
    assert resp.status == 201
    resp = await client.post("/v1/suppressions", headers=b.headers, json={"email": "lead@globex.example"})
    assert resp.status == 201
    prefix = (await (await client.get(f"/v1/workspaces/{b.workspace_id}/keys", headers=b.headers)).json())[
        "data"
    ][0]["prefix"]
    return World(
        a,
        b,
        await _platform_for(pool, a.operator_id),
        await _platform_for(pool, b.operator_id),
        mbx,
        "b@globex.example",
        "lead@globex.example",
        prefix,
    )


def _id_routes(w: World, missing: bool) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(method, path, body) for every route that names one resource: B's, or a missing one."""
    mbx = "mbx_0000000000000000" if missing else w.b_mailbox
    handle = "nobody@globex.example" if missing else w.b_handle
    email = "nobody@globex.example" if missing else w.b_suppressed
    ws = "ws_0000000000000000" if missing else w.b.workspace_id
    prefix = "sk_AAAAAAAA" if missing else w.b_key_prefix
    return [
        ("GET", f"/v1/mailboxes/{mbx}", None),
        ("PATCH", f"/v1/mailboxes/{mbx}", {"status": "paused"}),
        ("DELETE", f"/v1/mailboxes/{mbx}", None),
        ("GET", f"/v1/identities/{handle}", None),
        ("PATCH", f"/v1/identities/{handle}", {"dailyCap": 1}),
        ("DELETE", f"/v1/identities/{handle}", None),
        ("DELETE", f"/v1/suppressions/{email}", None),
        ("GET", f"/v1/workspaces/{ws}", None),
        ("GET", f"/v1/workspaces/{ws}/keys", None),
        ("POST", f"/v1/workspaces/{ws}/keys", {"name": "x"}),
        ("DELETE", f"/v1/keys/{prefix}", None),
    ]


COLLECTIONS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/mailboxes", None),
    (
        "POST",
        "/v1/mailboxes",
        {"email": "x@globex.example", "smtp": {"host": "h", "port": 25, "security": "none", "password": "p"}},
    ),
    ("GET", "/v1/identities", None),
    ("POST", "/v1/identities", {"handle": "new@globex.example"}),
    ("GET", "/v1/suppressions", None),
    ("POST", "/v1/suppressions", {"email": "new@globex.example"}),
]


async def _call(
    client: TestClient,
    method: str,
    path: str,
    body: dict[str, Any] | None,  # type: ignore[type-arg]
    headers: dict[str, str],
) -> tuple[int, bytes]:
    resp = await client.request(method, path, json=body, headers=headers)
    return resp.status, await resp.read()


async def _b_untouched(client: TestClient, w: World) -> None:  # type: ignore[type-arg]
    mbx = await (await client.get(f"/v1/mailboxes/{w.b_mailbox}", headers=w.b.headers)).json()
    assert mbx["data"]["status"] == "active"
    idn = await (await client.get(f"/v1/identities/{w.b_handle}", headers=w.b.headers)).json()
    assert idn["data"]["dailyCap"] == 100 and idn["data"]["mailboxIds"] == [w.b_mailbox]
    sup = await (await client.get("/v1/suppressions", headers=w.b.headers)).json()
    assert [s["email"] for s in sup["data"]] == [w.b_suppressed]
    keys = await (await client.get(f"/v1/workspaces/{w.b.workspace_id}/keys", headers=w.b.headers)).json()
    assert [k["prefix"] for k in keys["data"]] == [w.b_key_prefix]


async def test_workspace_key_on_other_workspace_ids_is_identical_404(
    client: TestClient, world: World
) -> None:  # type: ignore[type-arg]
    for caller in (world.a.headers, {"X-Api-Key": world.a_platform, "X-Workspace-Id": world.a.workspace_id}):
        for theirs, missing in zip(_id_routes(world, False), _id_routes(world, True), strict=True):
            got = await _call(client, *theirs, caller)
            expected = await _call(client, *missing, caller)
            assert got[0] == 404, theirs
            assert got == expected, theirs
    await _b_untouched(client, world)


async def test_lists_show_only_own_workspace(client: TestClient, world: World) -> None:  # type: ignore[type-arg]
    for path in ("/v1/mailboxes", "/v1/identities", "/v1/suppressions"):
        body = await (await client.get(path, headers=world.a.headers)).json()
        assert body["data"] == [], path
    body = await (await client.get("/v1/workspaces", headers={"X-Api-Key": world.a_platform})).json()
    assert [w["id"] for w in body["data"]] == [world.a.workspace_id]


async def test_platform_key_on_a_workspace_it_does_not_own(client: TestClient, world: World) -> None:  # type: ignore[type-arg]
    for method, path, body in COLLECTIONS + _id_routes(world, False)[:7]:
        theirs = await _call(
            client,
            method,
            path,
            body,
            {"X-Api-Key": world.a_platform, "X-Workspace-Id": world.b.workspace_id},
        )
        missing = await _call(
            client,
            method,
            path,
            body,
            {"X-Api-Key": world.a_platform, "X-Workspace-Id": "ws_0000000000000000"},
        )
        assert theirs[0] == 404, (method, path)
        assert theirs == missing, (method, path)
    await _b_untouched(client, world)
    # The owner's platform key does reach B with the header.
    resp = await client.get(
        f"/v1/mailboxes/{world.b_mailbox}",
        headers={"X-Api-Key": world.b_platform, "X-Workspace-Id": world.b.workspace_id},
    )
    assert resp.status == 200


async def test_platform_key_without_workspace_header_is_400(client: TestClient, world: World) -> None:  # type: ignore[type-arg]
    for method, path, body in COLLECTIONS + _id_routes(world, False)[:7]:
        resp = await client.request(method, path, json=body, headers={"X-Api-Key": world.b_platform})
        assert resp.status == 400, (method, path)
        err = await resp.json()
        assert err["details"] == [{"field": "X-Workspace-Id", "message": "Header required"}]


async def test_no_key_unknown_key_revoked_key_are_401(
    client: TestClient, world: World, pool: asyncpg.Pool
) -> None:  # type: ignore[type-arg]
    revoked, _ = await wsdb.insert_key(
        pool, kind="workspace", operator_id=world.a.operator_id, workspace_id=world.a.workspace_id, name="old"
    )
    resp = await client.delete(f"/v1/keys/{revoked[:11]}", headers=world.a.headers)
    assert resp.status == 204
    routes = [
        *COLLECTIONS,
        *_id_routes(world, False),
        ("POST", "/v1/workspaces", {"name": "x"}),
        ("GET", "/v1/workspaces", None),
    ]
    bad_headers: list[dict[str, str]] = [
        {},
        {"X-Api-Key": "sk_" + "A" * 40},
        {"Authorization": "Bearer sk_user_" + "B" * 40},
        {"X-Api-Key": "not-a-key"},
        {"X-Api-Key": revoked},
        {"Authorization": f"Bearer {revoked}"},
    ]
    for method, path, body in routes:
        for headers in bad_headers:
            resp = await client.request(method, path, json=body, headers=headers)
            assert resp.status == 401, (method, path, headers)
            assert (await resp.json())["error"] == "Unauthorized"
    await _b_untouched(client, world)


async def test_workspace_key_on_platform_only_routes_is_403(client: TestClient, world: World) -> None:  # type: ignore[type-arg]
    for method, path, body in [
        ("POST", "/v1/workspaces", {"name": "x"}),
        ("GET", "/v1/workspaces", None),
        ("POST", f"/v1/workspaces/{world.a.workspace_id}/keys", {"name": "x"}),
    ]:
        resp = await client.request(method, path, json=body, headers=world.a.headers)
        assert resp.status == 403, (method, path)
        assert (await resp.json())["code"] == 403
