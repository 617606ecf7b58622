"""Suppressions over HTTP: add (normalised), list with cursors, remove, validation."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from tests.support.factories import Tenant

pytestmark = pytest.mark.integration


async def test_add_list_remove(client: TestClient, acme: Tenant) -> None:  # type: ignore[type-arg]
    resp = await client.post(
        "/v1/suppressions", headers=acme.headers, json={"email": "Morgan@NorthWind.Example"}
    )
    assert resp.status == 201
    data = (await resp.json())["data"]
    assert data["email"] == "Morgan@northwind.example" and data["reason"] == "manual"
    # Same address again (domain case differs): not a second row; the reason is updated.
    resp = await client.post(
        "/v1/suppressions",
        headers=acme.headers,
        json={"email": "Morgan@northwind.EXAMPLE", "reason": "unsubscribed"},
    )
    assert resp.status == 200
    assert (await resp.json())["data"]["reason"] == "unsubscribed"
    listed = await (await client.get("/v1/suppressions", headers=acme.headers)).json()
    assert listed["success"] is True and listed["nextCursor"] is None
    assert [(s["email"], s["reason"]) for s in listed["data"]] == [
        ("Morgan@northwind.example", "unsubscribed")
    ]

    resp = await client.delete("/v1/suppressions/Morgan@NORTHWIND.example", headers=acme.headers)
    assert resp.status == 204
    assert (
        await client.delete("/v1/suppressions/Morgan@northwind.example", headers=acme.headers)
    ).status == 404
    assert (await client.delete("/v1/suppressions/not-an-address", headers=acme.headers)).status == 404


async def test_idn_and_test_domains(client: TestClient, acme: Tenant) -> None:  # type: ignore[type-arg]
    for email in ("lead@example.test", "josé@bücher.example"):
        resp = await client.post(
            "/v1/suppressions", headers=acme.headers, json={"email": email, "reason": "hard_bounce"}
        )
        assert resp.status == 201, await resp.text()


async def test_validation(client: TestClient, acme: Tenant) -> None:  # type: ignore[type-arg]
    resp = await client.post(
        "/v1/suppressions", headers=acme.headers, json={"email": "nope@", "reason": "spite", "x": 1}
    )
    assert resp.status == 400
    assert sorted(d["field"] for d in (await resp.json())["details"]) == ["email", "reason", "x"]
    resp = await client.post("/v1/suppressions", headers=acme.headers, json={"email": 5})
    assert [d["field"] for d in (await resp.json())["details"]] == ["email"]


async def test_pagination(client: TestClient, acme: Tenant) -> None:  # type: ignore[type-arg]
    emails = [f"p{i}@example.com" for i in range(5)]
    for e in emails:
        await client.post("/v1/suppressions", headers=acme.headers, json={"email": e})
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        page = await (
            await client.get(
                "/v1/suppressions?limit=2" + (f"&cursor={cursor}" if cursor else ""), headers=acme.headers
            )
        ).json()
        seen += [s["email"] for s in page["data"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == emails
