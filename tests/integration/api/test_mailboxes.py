"""Mailboxes over HTTP: CRUD, write-only passwords, validation shapes, pagination."""

from __future__ import annotations

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests.integration.api.conftest import create_mailbox, mailbox_body
from tests.support.factories import Tenant

pytestmark = pytest.mark.integration


async def test_create_get_list_update_delete(client: TestClient, acme: Tenant) -> None:  # type: ignore[type-arg]
    mbx = await create_mailbox(client, acme)
    assert mbx["id"].startswith("mbx_")
    assert mbx["email"] == "alice@tryacme.example" and mbx["fromName"] == "Alice Chen"
    assert mbx["smtp"] == {
        "host": "smtp.tryacme.example",
        "port": 587,
        "security": "starttls",
        "username": "alice@tryacme.example",
    }
    assert mbx["imap"]["username"] == "alice@tryacme.example"  # defaults to the address
    assert mbx["dailyCap"] == 40 and mbx["status"] == "active"
    assert mbx["health"] == {
        "status": "healthy",
        "lastError": None,
        "consecutiveFailures": 0,
        "bounceRate": 0.0,
        "sentToday": 0,
    }
    assert mbx["createdAt"].endswith("Z")

    resp = await client.get(f"/v1/mailboxes/{mbx['id']}", headers=acme.headers)
    assert resp.status == 200
    body = await resp.json()
    assert body["success"] is True and body["data"] == mbx

    resp = await client.patch(
        f"/v1/mailboxes/{mbx['id']}",
        headers=acme.headers,
        json={"status": "paused", "dailyCap": 10, "fromName": None, "smtp": {"port": 465, "security": "tls"}},
    )
    assert resp.status == 200, await resp.text()
    data = (await resp.json())["data"]
    assert data["status"] == "paused" and data["dailyCap"] == 10 and data["fromName"] is None
    assert data["smtp"]["port"] == 465 and data["smtp"]["security"] == "tls"
    assert data["smtp"]["host"] == "smtp.tryacme.example"

    resp = await client.patch(f"/v1/mailboxes/{mbx['id']}", headers=acme.headers, json={"imap": None})
    assert (await resp.json())["data"]["imap"] is None
    resp = await client.patch(
        f"/v1/mailboxes/{mbx['id']}",
        headers=acme.headers,
        json={"imap": {"host": "imap.x.example", "port": 143, "security": "none"}},
    )
    assert resp.status == 400
    assert (await resp.json())["details"] == [{"field": "imap.password", "message": "Field required"}]

    listed = await (await client.get("/v1/mailboxes", headers=acme.headers)).json()
    assert [m["id"] for m in listed["data"]] == [mbx["id"]] and listed["nextCursor"] is None

    resp = await client.delete(f"/v1/mailboxes/{mbx['id']}", headers=acme.headers)
    assert resp.status == 204 and await resp.read() == b""
    assert (await client.get(f"/v1/mailboxes/{mbx['id']}", headers=acme.headers)).status == 404
    assert (await client.delete(f"/v1/mailboxes/{mbx['id']}", headers=acme.headers)).status == 404
    # The address is free again once the mailbox is deleted.
    await create_mailbox(client, acme)


async def test_passwords_are_write_only_and_encrypted(
    client: TestClient,
    acme: Tenant,
    pool: asyncpg.Pool,  # type: ignore[type-arg]
) -> None:
    mbx = await create_mailbox(client, acme)
    for resp in (
        await client.get(f"/v1/mailboxes/{mbx['id']}", headers=acme.headers),
        await client.get("/v1/mailboxes", headers=acme.headers),
    ):
        text = await resp.text()
        assert "smtp-pw-Zq81" not in text and "imap-pw-Xv27" not in text and "password" not in text
    row = await pool.fetchrow(
        "SELECT smtp_password_enc, imap_password_enc FROM mailboxes WHERE id = $1", mbx["id"]
    )
    assert row["smtp_password_enc"] and "smtp-pw-Zq81" not in row["smtp_password_enc"]
    # A new password replaces the stored one; omitting it keeps the old.
    await client.patch(f"/v1/mailboxes/{mbx['id']}", headers=acme.headers, json={"smtp": {"host": "h2"}})
    kept = await pool.fetchval("SELECT smtp_password_enc FROM mailboxes WHERE id = $1", mbx["id"])
    assert kept == row["smtp_password_enc"]
    await client.patch(f"/v1/mailboxes/{mbx['id']}", headers=acme.headers, json={"smtp": {"password": "n3w"}})
    changed = await pool.fetchval("SELECT smtp_password_enc FROM mailboxes WHERE id = $1", mbx["id"])
    assert changed != row["smtp_password_enc"]


async def test_duplicate_email_is_409_domain_case_insensitive(
    client: TestClient, acme: Tenant, globex: Tenant
) -> None:  # type: ignore[type-arg]
    await create_mailbox(client, acme, "bob@tryacme.example")
    resp = await client.post("/v1/mailboxes", json=mailbox_body("bob@TRYACME.example"), headers=acme.headers)
    assert resp.status == 409
    assert (await resp.json())["error"] == "Conflict"
    # Another workspace may use the same address.
    await create_mailbox(client, globex, "bob@tryacme.example")
    other = await create_mailbox(client, acme, "carol@tryacme.example")
    resp = await client.patch(
        f"/v1/mailboxes/{other['id']}", json={"email": "bob@tryacme.example"}, headers=acme.headers
    )
    assert resp.status == 409


async def test_validation_lists_every_invalid_field(client: TestClient, acme: Tenant) -> None:  # type: ignore[type-arg]
    body = mailbox_body("not-an-email", bogus=True, dailyCap="40", status="sleeping")
    body["smtp"] = {"host": "smtp.x.example", "port": 70000, "security": "ssl", "password": "p"}
    body["imap"] = {"host": "imap.x.example", "port": 993, "security": "tls"}
    resp = await client.post("/v1/mailboxes", json=body, headers=acme.headers)
    assert resp.status == 400
    err = await resp.json()
    assert err["error"] == "Bad Request" and err["code"] == 400 and err["message"]
    fields = sorted(d["field"] for d in err["details"])
    assert fields == ["bogus", "dailyCap", "email", "imap.password", "smtp.port", "smtp.security", "status"]
    by_field = {d["field"]: d["message"] for d in err["details"]}
    assert by_field["email"] == "Invalid email format"
    assert by_field["bogus"] == "Unknown field"
    assert by_field["imap.password"] == "Field required"

    resp = await client.post("/v1/mailboxes", json={}, headers=acme.headers)
    assert sorted(d["field"] for d in (await resp.json())["details"]) == ["email", "smtp"]
    resp = await client.post("/v1/mailboxes", json=[1], headers=acme.headers)
    assert resp.status == 400
    resp = await client.post(
        "/v1/mailboxes", data=b'{"email": ', headers={**acme.headers, "Content-Type": "application/json"}
    )
    assert resp.status == 400 and (await resp.json())["message"] == "Malformed JSON"
    resp = await client.post(
        "/v1/mailboxes",
        data=b"email=x",
        headers={**acme.headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 415

    mbx = await create_mailbox(client, acme)
    resp = await client.patch(
        f"/v1/mailboxes/{mbx['id']}",
        headers=acme.headers,
        json={"email": None, "smtp": {"port": 0}, "password": "x"},
    )
    assert resp.status == 400
    assert sorted(d["field"] for d in (await resp.json())["details"]) == ["password", "smtp.port"]
    resp = await client.patch(f"/v1/mailboxes/{mbx['id']}", headers=acme.headers, json={"email": None})
    assert (await resp.json())["details"] == [{"field": "email", "message": "May not be null"}]


async def test_pagination(client: TestClient, acme: Tenant) -> None:  # type: ignore[type-arg]
    made = [(await create_mailbox(client, acme, f"m{i}@tryacme.example"))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        url = "/v1/mailboxes?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await (await client.get(url, headers=acme.headers)).json()
        assert len(page["data"]) <= 2
        seen += [m["id"] for m in page["data"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == made
    for bad in ("limit=0", "limit=101", "limit=x", "cursor=%%%"):
        resp = await client.get(f"/v1/mailboxes?{bad}", headers=acme.headers)
        assert resp.status == 400, bad
        assert (await resp.json())["details"][0]["field"] in ("limit", "cursor")
