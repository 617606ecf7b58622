"""POST /v1/identities/{handle}/send through the API and an in-process router."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from gateway.config import Settings
from gateway.timefmt import iso
from tests.integration.send.conftest import RouterControl, World, make_world

pytestmark = pytest.mark.integration

Client = TestClient  # type: ignore[type-arg]


async def post(client: Client, world: World, body: dict[str, Any], **headers: str) -> tuple[int, Any]:
    resp = await client.post(world.url, json=body, headers={**world.tenant.headers, **headers})
    return resp.status, await resp.json()


NEW = {"subject": "Hello", "text": "Hi there"}


async def test_one_recipient_shape(client: Client, world: World, router: RouterControl,
                                   pool: asyncpg.Pool) -> None:
    status, body = await post(client, world, {"to": "morgan@northwind.example", **NEW,
                                              "metadata": {"seq": 1, "tag": "a"}})
    assert status == 202
    assert body["accepted"] == 1 and body["rejected"] == 0
    assert body["dailyCap"] == 1000 and body["remaining"] == 999
    assert body["identity"] == world.handle
    [m] = body["messages"]
    assert m["to"] == "morgan@northwind.example" and m["status"] == "accepted"
    assert m["id"].startswith("<") and m["id"].endswith("@tryacme.example>")
    assert m["convId"].startswith("conv_") and m["affinity"] == "new"
    assert m["account"]["id"] in world.mailboxes
    assert m["account"]["email"].endswith("@tryacme.example")
    row = await pool.fetchrow(
        "SELECT m.*, c.identity_id FROM messages m JOIN conversations c ON c.id = m.conversation_id"
        " WHERE c.id = $1", m["convId"])
    assert row["rfc_message_id"] == m["id"] and row["status"] == "queued"
    assert row["from_email"] == m["account"]["email"] and row["from_name"].startswith("Sender")
    assert row["to_emails"] == ["morgan@northwind.example"] and row["metadata"] == {"seq": 1, "tag": "a"}
    assert row["text_body"] == "Hi there" and row["send_at"] is None
    task = await pool.fetchrow("SELECT * FROM outbox WHERE message_id = $1", f"deliver:{row['id']}")
    assert orjson.loads(task["body"]) == {"messageId": row["id"]}
    # published (and stamped, in a batch) right after the answer; wait for it, bounded
    for _ in range(100):
        if await pool.fetchval("SELECT published_at FROM outbox WHERE id = $1", task["id"]):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("deliver task never stamped as published")


async def test_several_recipients_each_get_a_conversation(
    client: Client, world: World, router: RouterControl, pool: asyncpg.Pool
) -> None:
    to = ["a@northwind.example", "b@northwind.example", "c@northwind.example"]
    status, body = await post(client, world, {"to": to, **NEW})
    assert status == 202 and body["accepted"] == 3 and body["remaining"] == 997
    assert [m["to"] for m in body["messages"]] == to
    assert len({m["convId"] for m in body["messages"]}) == 3
    # rotation: least used first, so two mailboxes share three recipients 2/1
    accounts = [m["account"]["id"] for m in body["messages"]]
    assert set(accounts) == set(world.mailboxes)
    assert await pool.fetchval("SELECT count(*) FROM messages") == 3


async def test_reply_mode_threads_on_the_conversation(
    client: Client, world: World, router: RouterControl, pool: asyncpg.Pool
) -> None:
    _, first = await post(client, world, {"to": "morgan@northwind.example", "subject": "Re: Quote",
                                          "text": "one"})
    conv = first["messages"][0]["convId"]
    status, body = await post(client, world, {"convId": conv, "html": "<p>two</p>"})
    assert status == 202
    [m] = body["messages"]
    assert m["convId"] == conv and m["to"] == "morgan@northwind.example"
    assert m["account"] == first["messages"][0]["account"]
    row = await pool.fetchrow("SELECT * FROM messages WHERE rfc_message_id = $1", m["id"])
    assert row["subject"] == "Re: Quote"
    assert row["in_reply_to"] == first["messages"][0]["id"]
    assert row["references"] == [first["messages"][0]["id"]]
    assert row["sequence_step"] == 2
    # third: References grows, In-Reply-To is the newest
    _, third = await post(client, world, {"convId": conv, "text": "three"})
    row3 = await pool.fetchrow("SELECT * FROM messages WHERE rfc_message_id = $1", third["messages"][0]["id"])
    assert row3["in_reply_to"] == m["id"]
    assert row3["references"] == [first["messages"][0]["id"], m["id"]]


async def test_reply_mode_errors(client: Client, world: World, router: RouterControl,
                                 pool: asyncpg.Pool, settings: Settings) -> None:
    _, first = await post(client, world, {"to": "morgan@northwind.example", **NEW})
    conv = first["messages"][0]["convId"]
    status, body = await post(client, world, {"convId": conv, "to": "x@northwind.example", **NEW})
    assert status == 400
    assert {d["field"] for d in body["details"]} == {"to", "subject"}
    status, body = await post(client, world, {"convId": "conv_doesnotexist", "text": "x"})
    assert status == 404 and body["code"] == 404
    # another workspace's identity with the same handle cannot reach the conversation
    other = await make_world(pool, settings)
    resp = await client.post(other.url, json={"convId": conv, "text": "x"}, headers=other.tenant.headers)
    assert resp.status == 404


async def test_validation_errors(client: Client, world: World, router: RouterControl) -> None:
    status, body = await post(client, world, {"to": ["ok@northwind.example", "not-an-email"], **NEW})
    assert status == 400
    assert body["error"] == "Bad Request" and body["code"] == 400
    assert {"field": "to[1]", "message": "Invalid email format"} in body["details"]
    status, body = await post(client, world, {"to": "a@northwind.example", "subject": "x"})
    assert status == 400 and body["details"][0]["field"] == "text"
    status, body = await post(client, world, {"to": "a@northwind.example", **NEW, "bogus": 1})
    assert status == 400 and body["details"] == [{"field": "bogus", "message": "Unknown field"}]
    past = iso(datetime.now(UTC) - timedelta(minutes=1))
    status, body = await post(client, world, {"to": "a@northwind.example", **NEW, "sendAt": past})
    assert status == 400 and body["details"][0]["field"] == "sendAt"
    status, body = await post(client, world, {"to": "a@northwind.example", **NEW,
                                              "sendAt": "2030-01-01T10:00:00"})
    assert status == 400 and body["details"][0]["field"] == "sendAt"
    status, body = await post(client, world, {"to": "a@northwind.example", **NEW,
                                              "headers": {"Subject": "x", "X-Ok": "a\r\nBcc: b"}})
    assert status == 400
    assert {d["field"] for d in body["details"]} == {"headers.Subject", "headers.X-Ok"}
    nested = {"to": "a@northwind.example", **NEW, "metadata": {"a": {"b": 1}}}
    status, body = await post(client, world, nested)
    assert status == 400 and body["details"][0]["field"].startswith("metadata.a")
    status, _ = await post(client, world, {"to": "a@northwind.example", **NEW}, **{"Idempotency-Key": "é"})
    assert status == 400
    resp = await client.post("/v1/identities/nobody@example.com/send", json={"to": "a@b.example", **NEW},
                             headers=world.tenant.headers)
    assert resp.status == 404
    resp = await client.post(world.url, json={"to": "a@b.example", **NEW})
    assert resp.status == 401


async def test_options_are_stored_for_delivery(
    client: Client, world: World, router: RouterControl, pool: asyncpg.Pool
) -> None:
    send_at = datetime.now(UTC) + timedelta(days=2)
    status, body = await post(client, world, {
        "to": "a@northwind.example", **NEW, "html": "<b>hi</b>", "sendAt": iso(send_at),
        "headers": {"X-Campaign": "c1", "List-Unsubscribe": "<mailto:u@x.example>"},
        "unsubscribe": True, "inReplyTo": "<root@elsewhere.example>",
        "lead": {"email": "a@northwind.example", "firstName": "Ann", "companyName": "Northwind"},
        "campaign": {"id": "cmp_1", "name": "Launch"},
    })
    assert status == 202
    m = body["messages"][0]
    row = await pool.fetchrow(
        "SELECT m.*, c.lead, c.campaign_id, c.campaign_name FROM messages m"
        " JOIN conversations c ON c.id = m.conversation_id WHERE m.rfc_message_id = $1", m["id"])
    assert row["headers"] == {"X-Campaign": "c1", "List-Unsubscribe": "<mailto:u@x.example>"}
    assert row["unsubscribe"] is True and row["in_reply_to"] == "<root@elsewhere.example>"
    assert row["references"] == ["<root@elsewhere.example>"]
    assert row["lead"] == {"firstName": "Ann", "companyName": "Northwind"}
    assert (row["campaign_id"], row["campaign_name"]) == ("cmp_1", "Launch")
    assert abs((row["send_at"] - send_at).total_seconds()) < 0.01
    task = await pool.fetchrow("SELECT * FROM outbox WHERE message_id = $1", f"deliver:{row['id']}")
    assert task["available_at"] == row["send_at"] and task["published_at"] is None
    day = send_at.date()
    used = await pool.fetchval("SELECT used FROM daily_usage WHERE subject_id = $1 AND day = $2",
                               world.identity_id, day)
    assert used == 1


async def test_caps_suppression_and_no_mailbox(
    client: Client, pool: asyncpg.Pool, settings: Settings, router: RouterControl
) -> None:
    world = await make_world(pool, settings, identity_cap=2)
    await pool.execute("INSERT INTO suppressions (workspace_id, email, reason) VALUES ($1, $2, 'manual')",
                       world.tenant.workspace_id, "gone@northwind.example")
    status, body = await post(client, world, {
        "to": ["a@northwind.example", "gone@northwind.example", "b@northwind.example", "c@northwind.example"],
        **NEW})
    assert status == 202
    assert [(m["status"], m.get("reason")) for m in body["messages"]] == [
        ("accepted", None), ("rejected", "suppressed"), ("accepted", None), ("rejected", "cap_exceeded")]
    assert body["accepted"] == 2 and body["rejected"] == 2 and body["remaining"] == 0
    status, body = await post(client, world, {"to": "d@northwind.example", **NEW})
    assert status == 429 and body["messages"][0]["reason"] == "cap_exceeded" and body["remaining"] == 0
    # every mailbox at its cap: cap_exceeded too; none active: no_mailbox
    capped = await make_world(pool, settings, mailbox_caps=(1,))
    assert (await post(client, capped, {"to": "a@northwind.example", **NEW}))[0] == 202
    status, body = await post(client, capped, {"to": "b@northwind.example", **NEW})
    assert status == 429 and body["messages"][0]["reason"] == "cap_exceeded" and body["remaining"] == 999
    await pool.execute("UPDATE mailboxes SET status = 'paused' WHERE id = $1", capped.mailboxes[0])
    status, body = await post(client, capped, {"to": "c@northwind.example", **NEW})
    assert status == 429 and body["messages"][0]["reason"] == "no_mailbox"


async def test_affinity_new_existing_reassigned(
    client: Client, world: World, router: RouterControl, pool: asyncpg.Pool
) -> None:
    lead = {"to": "morgan@northwind.example", **NEW}
    _, b1 = await post(client, world, lead)
    first = b1["messages"][0]
    assert first["affinity"] == "new"
    _, b2 = await post(client, world, {**lead, "to": "Morgan@NorthWind.example"})
    assert b2["messages"][0]["affinity"] == "existing"
    assert b2["messages"][0]["account"] == first["account"]
    await pool.execute("UPDATE mailboxes SET status = 'paused' WHERE id = $1", first["account"]["id"])
    _, b3 = await post(client, world, lead)
    assert b3["messages"][0]["affinity"] == "reassigned"
    assert b3["messages"][0]["account"]["id"] != first["account"]["id"]
    pinned = await pool.fetchval("SELECT mailbox_id FROM affinities WHERE identity_id = $1",
                                 world.identity_id)
    assert pinned == b3["messages"][0]["account"]["id"]
    _, b4 = await post(client, world, lead)
    assert b4["messages"][0]["affinity"] == "existing"


async def test_rotation_least_used_then_least_recent(
    client: Client, pool: asyncpg.Pool, settings: Settings, router: RouterControl
) -> None:
    world = await make_world(pool, settings, mailbox_caps=(1000, 1000, 1000))
    a, b, c = world.mailboxes
    today = datetime.now(UTC).date()
    await pool.executemany("INSERT INTO daily_usage (subject_id, day, used) VALUES ($1, $2, $3)",
                           [(a, today, 5), (b, today, 2), (c, today, 2)])
    await pool.execute("UPDATE mailboxes SET last_used_at = now() - interval '1 hour' WHERE id = $1", b)
    await pool.execute("UPDATE mailboxes SET last_used_at = now() - interval '2 hours' WHERE id = $1", c)
    _, body = await post(client, world, {"to": ["l1@x.example", "l2@x.example", "l3@x.example"], **NEW})
    # c (2 uses, least recent), then b (2 uses), then c again? no: c is now at 3, b at 3: b is older
    assert [m["account"]["id"] for m in body["messages"]] == [c, b, c]


async def test_attachments(client: Client, world: World, router: RouterControl, pool: asyncpg.Pool) -> None:
    ws = world.tenant.workspace_id
    key = f"inbox-attachments/{ws}/abc/report.pdf"
    await pool.execute(
        "INSERT INTO attachments (id, workspace_id, key, filename, content_type, size)"
        " VALUES ('att_up', $1, $2, 'report.pdf', 'application/pdf', 10)", ws, key)
    ref = {"url": f"http://127.0.0.1:8025/{key}", "key": key}
    status, _ = await post(client, world, {"to": "a@x.example", **NEW,
                                           "attachments": [{**ref, "key": "inbox-attachments/ws_other/x/y"}]})
    assert status == 403
    unknown = {**ref, "key": f"inbox-attachments/{ws}/none"}
    status, body = await post(client, world, {"to": "a@x.example", **NEW, "attachments": [unknown]})
    assert status == 400 and body["details"][0]["field"] == "attachments[0].key"
    status, body = await post(client, world, {"to": ["a@x.example", "b@x.example"], **NEW,
                                              "attachments": [{**ref, "filename": "Q3.pdf"}]})
    assert status == 202
    rows = await pool.fetch("SELECT * FROM attachments WHERE message_id IS NOT NULL ORDER BY id")
    assert len(rows) == 2 and {r["filename"] for r in rows} == {"Q3.pdf"}
    assert all(r["key"] == key and r["position"] == 0 and r["conversation_id"] for r in rows)
