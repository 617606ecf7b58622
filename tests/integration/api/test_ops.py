"""Operational endpoints: /healthz, /readyz, /metrics and the generated /openapi.json."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

pytestmark = pytest.mark.integration


async def test_health_ready_metrics(client: TestClient) -> None:  # type: ignore[type-arg]
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["checks"] == {"database": True, "broker": True}
    await client.get("/v1/mailboxes")  # counted as a 401
    text = await (await client.get("/metrics")).text()
    assert "mailgw_http_requests_total" in text
    assert 'route="/v1/mailboxes"' in text


async def test_openapi_documents_the_setup_api(client: TestClient) -> None:  # type: ignore[type-arg]
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.1")
    assert doc["info"]["title"]
    paths = doc["paths"]
    for path, methods in {
        "/v1/mailboxes": {"get", "post"},
        "/v1/mailboxes/{id}": {"get", "patch", "delete"},
        "/v1/identities": {"get", "post"},
        "/v1/identities/{handle}": {"get", "patch", "delete"},
        "/v1/suppressions": {"get", "post"},
        "/v1/suppressions/{email}": {"delete"},
        "/v1/workspaces": {"get", "post"},
    }.items():
        assert methods <= set(paths[path]), path
    create = paths["/v1/mailboxes"]["post"]
    ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"email", "smtp"} <= set(schema["required"])
    assert "201" in create["responses"]
    # The response model has no password anywhere.
    assert "password" not in str(doc["components"]["schemas"]["Mailbox"])
    # Every $ref resolves.
    text = str(doc)
    import re

    for name in set(re.findall(r"#/components/schemas/([A-Za-z0-9_]+)", text)):
        assert name in doc["components"]["schemas"], name
    assert paths["/v1/mailboxes/{id}"]["delete"]["responses"]["204"]
