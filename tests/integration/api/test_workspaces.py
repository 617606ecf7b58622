"""Workspaces and keys over HTTP against the real database and broker."""

from __future__ import annotations

import io

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

pytestmark = pytest.mark.integration


async def test_platform_key_creates_workspace_and_key(client: TestClient, platform_key: str) -> None:  # type: ignore[type-arg]
    h = {"X-Api-Key": platform_key}
    resp = await client.post("/v1/workspaces", json={"name": "Acme"}, headers=h)
    assert resp.status == 201
    ws = (await resp.json())["data"]
    assert ws["id"].startswith("ws_") and ws["name"] == "Acme"
    assert ws["createdAt"].endswith("Z")

    resp = await client.post(f"/v1/workspaces/{ws['id']}/keys", json={"name": "ci"},
                             headers={"Authorization": f"Bearer {platform_key}"})
    assert resp.status == 201
    key = (await resp.json())["data"]
    assert key["key"].startswith("sk_") and not key["key"].startswith("sk_user_")
    assert key["key"].startswith(key["prefix"])

    listed = await (await client.get(f"/v1/workspaces/{ws['id']}/keys", headers=h)).json()
    assert [k["prefix"] for k in listed["data"]] == [key["prefix"]]
    assert "key" not in listed["data"][0]

    # The workspace key may not create workspaces: 403.
    resp = await client.post("/v1/workspaces", json={"name": "X"}, headers={"X-Api-Key": key["key"]})
    assert resp.status == 403
    assert (await resp.json())["error"] == "Forbidden"

    resp = await client.delete(f"/v1/keys/{key['prefix']}", headers=h)
    assert resp.status == 204
    resp = await client.get(f"/v1/workspaces/{ws['id']}", headers={"X-Api-Key": key["key"]})
    assert resp.status == 401


async def test_errors_have_the_spec_shape(client: TestClient, platform_key: str) -> None:  # type: ignore[type-arg]
    h = {"X-Api-Key": platform_key}
    resp = await client.post("/v1/workspaces", json={"name": "A", "bogus": 1}, headers=h)
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "Bad Request" and body["code"] == 400
    assert {"field": "bogus", "message": "Unknown field"} in body["details"]

    json_ct = {**h, "Content-Type": "application/json"}
    resp = await client.post("/v1/workspaces", data=b"{not json", headers=json_ct)
    assert resp.status == 400
    resp = await client.post("/v1/workspaces", data=b"name=x", headers={**h, "Content-Type": "text/plain"})
    assert resp.status == 415
    resp = await client.post("/v1/workspaces", data=io.BytesIO(b"{" + b" " * (2 * 1024 * 1024) + b"}"),
                             headers={**h, "Content-Type": "application/json"})
    assert resp.status == 413
    resp = await client.get("/v1/workspaces", headers={"X-Request-Id": "abc-123"})
    assert resp.status == 401 and resp.headers["X-Request-Id"] == "abc-123"
    resp = await client.get("/v1/workspaces?limit=500", headers=h)
    assert resp.status == 400
    assert (await resp.json())["details"][0]["field"] == "limit"


async def test_keys_are_stored_hashed(client: TestClient, platform_key: str, pool: asyncpg.Pool) -> None:  # type: ignore[type-arg]
    h = {"X-Api-Key": platform_key}
    ws = (await (await client.post("/v1/workspaces", json={"name": "A"}, headers=h)).json())["data"]
    key = (await (await client.post(f"/v1/workspaces/{ws['id']}/keys", headers=h)).json())["data"]["key"]
    dump = await pool.fetchval("SELECT string_agg(t::text, ' ') FROM api_keys t")
    assert key not in dump and platform_key not in dump
