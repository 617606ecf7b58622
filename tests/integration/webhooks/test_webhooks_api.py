"""Webhook endpoints over HTTP: CRUD, validation, SSRF refusal, workspaces kept apart."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.api.app import create_app
from gateway.config import Settings
from tests.integration.webhooks.conftest import create_hook
from tests.support.factories import Tenant, tenant

pytestmark = pytest.mark.integration


@pytest.fixture
def strict_settings(settings: Settings) -> Settings:
    """The production default: private and loopback destinations refused."""
    return settings.model_copy(update={"webhooks_allow_private": False})


@pytest.fixture
async def strict_client(strict_settings: Settings) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    async with TestClient(TestServer(create_app(strict_settings))) as c:
        yield c


async def test_crud_and_secret_shown_only_at_creation(client: TestClient, ws: Tenant) -> None:  # type: ignore[type-arg]
    hook = await create_hook(client, ws, "http://127.0.0.1:9/hook", events=["email.sent", "reply.received"],
                             description="CRM")
    assert hook["id"].startswith("whk_") and hook["secret"].startswith("whsec_")
    assert hook["events"] == ["email.sent", "reply.received"] and hook["enabled"] is True
    h = ws.headers

    got = (await (await client.get(f"/v1/webhooks/{hook['id']}", headers=h)).json())["data"]
    assert "secret" not in got and got["description"] == "CRM"
    listed = await (await client.get("/v1/webhooks", headers=h)).json()
    assert [w["id"] for w in listed["data"]] == [hook["id"]] and listed["nextCursor"] is None
    assert all("secret" not in w for w in listed["data"])

    resp = await client.patch(f"/v1/webhooks/{hook['id']}", json={"events": ["*"], "enabled": False},
                              headers=h)
    assert resp.status == 200
    patched = (await resp.json())["data"]
    assert patched["events"] == ["*"] and patched["enabled"] is False
    assert patched["description"] == "CRM"

    resp = await client.post(f"/v1/webhooks/{hook['id']}/rotate-secret", headers=h)
    assert resp.status == 200
    secret = (await resp.json())["data"]["secret"]
    assert secret.startswith("whsec_") and secret != hook["secret"]

    assert (await client.delete(f"/v1/webhooks/{hook['id']}", headers=h)).status == 204
    assert (await client.get(f"/v1/webhooks/{hook['id']}", headers=h)).status == 404
    assert (await client.delete(f"/v1/webhooks/{hook['id']}", headers=h)).status == 404


async def test_validation(client: TestClient, ws: Tenant) -> None:  # type: ignore[type-arg]
    h = ws.headers
    resp = await client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/", "events": ["email.snet"]},
                             headers=h)
    assert resp.status == 400
    assert (await resp.json())["details"][0]["field"] == "events[0]"
    for body in ({"url": "ftp://127.0.0.1/"}, {"url": "http://127.0.0.1:9/", "events": []},
                 {"url": "http://127.0.0.1:9/", "bogus": 1},
                 {"url": "http://127.0.0.1:9/", "enabled": "yes"}):
        resp = await client.post("/v1/webhooks", json=body, headers=h)
        assert resp.status == 400, body
    hook = await create_hook(client, ws, "http://127.0.0.1:9/hook")
    assert hook["events"] == ["*"]
    resp = await client.patch(f"/v1/webhooks/{hook['id']}", json={"events": ["nope"]}, headers=h)
    assert resp.status == 400
    resp = await client.patch(f"/v1/webhooks/{hook['id']}", json={"url": None}, headers=h)
    assert resp.status == 400


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hook",
    "http://10.1.2.3/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://100.64.0.1/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[64:ff9b::a00:1]/hook",
    "http://[2002:c0a8:101::1]/hook",
    "http://localhost/hook",
])
async def test_private_destinations_refused_by_default(
    strict_client: TestClient, pool: asyncpg.Pool, url: str  # type: ignore[type-arg]
) -> None:
    t = await tenant(pool)
    resp = await strict_client.post("/v1/webhooks", json={"url": url}, headers=t.headers)
    assert resp.status == 400
    details = (await resp.json())["details"]
    assert any(d["field"] == "url" for d in details), details
    hook = await create_hook(strict_client, t, "https://93.184.215.14/hook")  # a public address
    resp = await strict_client.patch(f"/v1/webhooks/{hook['id']}", json={"url": url}, headers=t.headers)
    assert resp.status == 400


async def test_other_workspace_sees_404(client: TestClient, ws: Tenant, pool: asyncpg.Pool) -> None:  # type: ignore[type-arg]
    hook = await create_hook(client, ws, "http://127.0.0.1:9/hook")
    other = await tenant(pool, "Other")
    h = other.headers
    base = f"/v1/webhooks/{hook['id']}"
    assert (await client.get(base, headers=h)).status == 404
    assert (await client.patch(base, json={"enabled": False}, headers=h)).status == 404
    assert (await client.delete(base, headers=h)).status == 404
    assert (await client.post(f"{base}/rotate-secret", headers=h)).status == 404
    assert (await client.get(f"{base}/deliveries", headers=h)).status == 404
    assert (await client.post(f"{base}/test", headers=h)).status == 404
    assert (await client.post(f"{base}/deliveries/dlv_x/retry", headers=h)).status == 404
    assert (await (await client.get("/v1/webhooks", headers=h)).json())["data"] == []
