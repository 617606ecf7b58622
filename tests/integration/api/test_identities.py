"""Identities over HTTP: CRUD with pools, time zones, 409 on duplicate handles, pool checks."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from tests.integration.api.conftest import create_mailbox
from tests.support.factories import Tenant

pytestmark = pytest.mark.integration

HANDLE = "alice.acme@example.com"


async def test_crud_with_pool(client: TestClient, acme: Tenant) -> None:  # type: ignore[type-arg]
    m1 = (await create_mailbox(client, acme, "a1@tryacme.example"))["id"]
    m2 = (await create_mailbox(client, acme, "a2@tryacme.example"))["id"]
    resp = await client.post(
        "/v1/identities",
        headers=acme.headers,
        json={"handle": HANDLE, "displayName": "Alice", "dailyCap": 150, "mailboxIds": [m2, m1]},
    )
    assert resp.status == 201, await resp.text()
    idn = (await resp.json())["data"]
    assert idn["id"].startswith("idn_") and idn["handle"] == HANDLE
    assert idn["timezone"] == "UTC" and idn["mailboxIds"] == [m2, m1] and idn["dailyCap"] == 150

    got = await client.get(f"/v1/identities/{HANDLE}", headers=acme.headers)
    assert (await got.json())["data"] == idn
    # Handles compare case-insensitively.
    assert (await client.get("/v1/identities/Alice.Acme@Example.com", headers=acme.headers)).status == 200

    resp = await client.patch(
        f"/v1/identities/{HANDLE}",
        headers=acme.headers,
        json={"timezone": "America/New_York", "mailboxIds": [m1], "displayName": None},
    )
    assert resp.status == 200
    data = (await resp.json())["data"]
    assert (
        data["timezone"] == "America/New_York" and data["mailboxIds"] == [m1] and data["displayName"] is None
    )

    # Deleting a mailbox takes it out of the pool.
    assert (await client.delete(f"/v1/mailboxes/{m1}", headers=acme.headers)).status == 204
    data = (await (await client.get(f"/v1/identities/{HANDLE}", headers=acme.headers)).json())["data"]
    assert data["mailboxIds"] == []

    listed = await (await client.get("/v1/identities", headers=acme.headers)).json()
    assert [i["handle"] for i in listed["data"]] == [HANDLE] and listed["nextCursor"] is None

    assert (await client.delete(f"/v1/identities/{HANDLE}", headers=acme.headers)).status == 204
    assert (await client.get(f"/v1/identities/{HANDLE}", headers=acme.headers)).status == 404
    assert (await client.delete(f"/v1/identities/{HANDLE}", headers=acme.headers)).status == 404
    # The handle can be reused after deletion.
    resp = await client.post("/v1/identities", headers=acme.headers, json={"handle": HANDLE})
    assert resp.status == 201


async def test_duplicate_handle_is_409(client: TestClient, acme: Tenant, globex: Tenant) -> None:  # type: ignore[type-arg]
    assert (await client.post("/v1/identities", headers=acme.headers, json={"handle": HANDLE})).status == 201
    resp = await client.post("/v1/identities", headers=acme.headers, json={"handle": HANDLE.upper()})
    assert resp.status == 409 and (await resp.json())["code"] == 409
    assert (
        await client.post("/v1/identities", headers=globex.headers, json={"handle": HANDLE})
    ).status == 201
    await client.post("/v1/identities", headers=acme.headers, json={"handle": "bob"})
    resp = await client.patch("/v1/identities/bob", headers=acme.headers, json={"handle": HANDLE})
    assert resp.status == 409


async def test_pool_must_belong_to_the_workspace(client: TestClient, acme: Tenant, globex: Tenant) -> None:  # type: ignore[type-arg]
    mine = (await create_mailbox(client, acme))["id"]
    theirs = (await create_mailbox(client, globex))["id"]
    resp = await client.post(
        "/v1/identities",
        headers=acme.headers,
        json={"handle": HANDLE, "mailboxIds": [mine, theirs, "mbx_nope"]},
    )
    assert resp.status == 400
    assert (await resp.json())["details"] == [
        {"field": "mailboxIds[1]", "message": "Unknown mailbox"},
        {"field": "mailboxIds[2]", "message": "Unknown mailbox"},
    ]
    # Nothing was created by the failed request.
    assert (await client.get(f"/v1/identities/{HANDLE}", headers=acme.headers)).status == 404
    resp = await client.post(
        "/v1/identities", headers=acme.headers, json={"handle": HANDLE, "mailboxIds": [mine, mine]}
    )
    assert (await resp.json())["details"] == [{"field": "mailboxIds[1]", "message": "Duplicate mailbox id"}]

    await client.post("/v1/identities", headers=acme.headers, json={"handle": HANDLE, "mailboxIds": [mine]})
    resp = await client.patch(f"/v1/identities/{HANDLE}", headers=acme.headers, json={"mailboxIds": [theirs]})
    assert resp.status == 400
    assert (await resp.json())["details"] == [{"field": "mailboxIds[0]", "message": "Unknown mailbox"}]
    data = (await (await client.get(f"/v1/identities/{HANDLE}", headers=acme.headers)).json())["data"]
    assert data["mailboxIds"] == [mine]


async def test_validation(client: TestClient, acme: Tenant) -> None:  # type: ignore[type-arg]
    resp = await client.post(
        "/v1/identities",
        headers=acme.headers,
        json={
            "handle": "bad handle/x",
            "timezone": "Mars/Olympus",
            "dailyCap": -1,
            "mailboxIds": "mbx_1",
            "extra": 1,
        },
    )
    assert resp.status == 400
    details = {d["field"]: d["message"] for d in (await resp.json())["details"]}
    assert set(details) == {"handle", "timezone", "dailyCap", "mailboxIds", "extra"}
    assert details["timezone"] == "Unknown IANA time zone"
    resp = await client.post("/v1/identities", headers=acme.headers, json={"handle": "x", "dailyCap": 1.5})
    assert [d["field"] for d in (await resp.json())["details"]] == ["dailyCap"]
    resp = await client.post(
        "/v1/identities", headers=acme.headers, json={"handle": "x", "mailboxIds": ["a", 2]}
    )
    assert [d["field"] for d in (await resp.json())["details"]] == ["mailboxIds[1]"]


async def test_pagination(client: TestClient, acme: Tenant) -> None:  # type: ignore[type-arg]
    for i in range(3):
        await client.post("/v1/identities", headers=acme.headers, json={"handle": f"h{i}@example.com"})
    first = await (await client.get("/v1/identities?limit=2", headers=acme.headers)).json()
    assert len(first["data"]) == 2 and first["nextCursor"]
    second = await (
        await client.get(f"/v1/identities?limit=2&cursor={first['nextCursor']}", headers=acme.headers)
    ).json()
    assert [i["handle"] for i in first["data"] + second["data"]] == [f"h{i}@example.com" for i in range(3)]
    assert second["nextCursor"] is None
