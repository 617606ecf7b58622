"""POST /v1/inbox/{id}/reply now and scheduled, cancel, and the scheduler sending them once."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from consumers import scheduler
from consumers.runner import close_context, open_context
from gateway.config import Settings
from gateway.timefmt import iso, now
from tests.integration.inbox.conftest import Setup, ago, conversation, drain, fast, message, until

pytestmark = pytest.mark.integration
Client = TestClient  # type: ignore[type-arg]


async def _reply(client: Client, s: Setup, conv: str, body: dict[str, Any], status: int = 202) -> Any:
    resp = await client.post(f"/v1/inbox/{conv}/reply", json=body, headers=s.headers)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_reply_now_writes_message_and_publishes_task(
    client: Client, pool: asyncpg.Pool, settings: Settings, setup: Setup
) -> None:
    conv = await conversation(pool, setup, subject="Re: Hello Bob")
    await message(pool, setup, conv, type="sent", direction="outbound", at=ago(60), rfc="<root@x.test>")
    await message(pool, setup, conv, type="reply", direction="inbound", at=ago(30), rfc="<lead@x.test>",
                  in_reply_to="<root@x.test>", references=["<root@x.test>"], read=False)

    body = await _reply(client, setup, conv, {"body": "<p>Thanks <b>Bob</b></p>",
                                              "cc": ["carol@example.test"], "bcc": ["sink@example.test"]})
    data = body["data"]
    assert data["id"].startswith("rpl_") and data["status"] == "pending" and data["isScheduled"] is False
    assert data["scheduledFor"].endswith("Z")

    sr = await pool.fetchrow("SELECT * FROM scheduled_replies WHERE id = $1", data["id"])
    assert sr["status"] == "sending" and sr["message_id"]
    m = await pool.fetchrow("SELECT * FROM messages WHERE id = $1", sr["message_id"])
    assert (m["type"], m["direction"], m["status"]) == ("reply", "outbound", "queued")
    assert m["subject"] == "Re: Hello Bob" and m["to_emails"] == ["bob@example.test"]
    assert m["cc_emails"] == ["carol@example.test"] and m["bcc_emails"] == ["sink@example.test"]
    assert m["in_reply_to"] == "<lead@x.test>" and m["references"] == ["<root@x.test>", "<lead@x.test>"]
    assert m["html_body"] == "<p>Thanks <b>Bob</b></p>" and "Thanks Bob" in m["text_body"]
    assert m["from_email"] == setup.mailbox_email and m["from_name"] == "Alice Chen"
    assert m["rfc_message_id"].endswith("@example.test>") and m["scheduled_reply_id"] == data["id"]
    assert await pool.fetchval("SELECT used FROM daily_usage WHERE subject_id = $1", setup.mailbox_id) == 1

    out = await pool.fetchrow("SELECT * FROM outbox WHERE message_id = $1", f"deliver:{m['id']}")
    assert out["published_at"] is not None
    tasks = await drain(settings, "mailgw.delivery")
    assert [orjson.loads(t.body) for t in tasks] == [{"messageId": m["id"]}]
    assert tasks[0].message_id == f"deliver:{m['id']}"

    detail = (await (await client.get(f"/v1/inbox/{conv}", headers=setup.headers)).json())["data"]
    mine = detail["messages"][-1]
    assert mine["id"] == m["id"] and mine["type"] == "reply" and mine["status"] == "queued"
    assert mine["isFromLead"] is False and mine["sentAt"] is None and mine["content"]
    assert detail["scheduledReplies"][0]["status"] == "sending"


async def test_plain_text_body_and_no_parent(client: Client, pool: asyncpg.Pool, setup: Setup) -> None:
    conv = await conversation(pool, setup)
    data = (await _reply(client, setup, conv, {"body": "Line one\n\nLine two"}))["data"]
    m = await pool.fetchrow("SELECT m.* FROM messages m WHERE scheduled_reply_id = $1", data["id"])
    assert m["text_body"] == "Line one\n\nLine two" and "<p>Line one</p>" in m["html_body"]
    assert m["in_reply_to"] is None and m["references"] == [] and m["subject"] == "Re: Hello Bob"


async def test_reply_validation(
    client: Client, pool: asyncpg.Pool, settings: Settings, setup: Setup, other: Setup
) -> None:
    conv = await conversation(pool, setup)
    past = iso(now() - timedelta(minutes=1))
    cases: list[tuple[dict[str, Any], int, str | None]] = [
        ({}, 400, "body"),
        ({"body": ""}, 400, "body"),
        ({"body": "x", "scheduledFor": past}, 400, "scheduledFor"),
        ({"body": "x", "scheduledFor": "2999-01-01T10:00:00"}, 400, "scheduledFor"),
        ({"body": "x", "cc": ["ok@example.test", "nope"]}, 400, "cc[1]"),
        ({"body": "x", "bcc": "a@example.test"}, 400, "bcc"),
        ({"body": "x", "extra": 1}, 400, "extra"),
        ({"body": "x", "mailboxId": other.mailbox_id}, 404, None),
        ({"body": "x", "attachments": [{"url": "u", "key": f"inbox-attachments/{other.ws}/a/b.txt"}]},
         403, "attachments[0].key"),
        ({"body": "x", "attachments": [{"url": "u", "key": f"inbox-attachments/{setup.ws}/../b"}]},
         403, "attachments[0].key"),
        ({"body": "x", "attachments": [{"url": "u", "key": f"inbox-attachments/{setup.ws}/a/b.txt"}]},
         400, "attachments[0].key"),
    ]
    for body, status, field in cases:
        got = await _reply(client, setup, conv, body, status)
        if field:
            assert field in [d["field"] for d in got["details"]], (body, got)
    await pool.execute("UPDATE mailboxes SET status = 'paused' WHERE id = $1", setup.mailbox_id)
    got = await _reply(client, setup, conv, {"body": "x", "mailboxId": setup.mailbox_id}, 400)
    assert got["details"][0]["field"] == "mailboxId"
    await _reply(client, setup, conv, {"body": "x"}, 400)
    await _reply(client, setup, "conv_missing", {"body": "x"}, 404)
    assert await pool.fetchval("SELECT count(*) FROM scheduled_replies") == 0
    assert await pool.fetchval("SELECT count(*) FROM messages") == 0


async def test_scheduled_reply_cancel(client: Client, pool: asyncpg.Pool, setup: Setup) -> None:
    conv = await conversation(pool, setup)
    when = now() + timedelta(hours=1)
    data = (await _reply(client, setup, conv, {"body": "later", "scheduledFor": iso(when)}))["data"]
    assert data["isScheduled"] is True and data["status"] == "pending"
    assert data["scheduledFor"] == iso(when)
    assert await pool.fetchval("SELECT count(*) FROM messages") == 0
    detail = (await (await client.get(f"/v1/inbox/{conv}", headers=setup.headers)).json())["data"]
    assert [(r["_id"], r["status"], r["message"]) for r in detail["scheduledReplies"]] == [
        (data["id"], "pending", "later")]

    path = f"/v1/inbox/{conv}/scheduled/{data['id']}"
    resp = await client.delete(path, headers=setup.headers)
    assert resp.status == 204 and await resp.read() == b""
    resp = await client.delete(path, headers=setup.headers)
    assert resp.status == 409
    assert (await client.delete(f"/v1/inbox/{conv}/scheduled/rpl_nope", headers=setup.headers)).status == 404
    detail = (await (await client.get(f"/v1/inbox/{conv}", headers=setup.headers)).json())["data"]
    assert detail["scheduledReplies"] == []

    # An immediate reply is "sending" at once: too late to cancel.
    now_id = (await _reply(client, setup, conv, {"body": "now"}))["data"]["id"]
    resp = await client.delete(f"/v1/inbox/{conv}/scheduled/{now_id}", headers=setup.headers)
    assert resp.status == 409


async def test_two_schedulers_send_each_due_reply_once(
    client: Client, pool: asyncpg.Pool, settings: Settings, setup: Setup
) -> None:
    convs = [await conversation(pool, setup, lead_email=f"lead{i}@example.test") for i in range(4)]
    ids = []
    for i in range(24):
        body = {"body": f"scheduled {i}", "scheduledFor": iso(now() + timedelta(hours=1))}
        ids.append((await _reply(client, setup, convs[i % 4], body))["data"]["id"])
    await pool.execute("UPDATE scheduled_replies SET scheduled_for = now()")  # all due now

    # A real grace: with 0 a relay may re-publish a row its writer is publishing at that moment
    # (outbox.publish_rows stamps after publishing, without a row lock) — at least once, not twice here.
    s = fast(settings, outbox_grace=10.0)
    contexts = [await open_context(s, f"sched{i}") for i in range(2)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(scheduler.run(c, stop)) for c in contexts]
    try:
        await until(pool, "SELECT NOT EXISTS (SELECT 1 FROM scheduled_replies WHERE status = 'pending')")
        await until(pool, "SELECT NOT EXISTS (SELECT 1 FROM outbox WHERE published_at IS NULL)")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for c in contexts:
            await close_context(c)

    rows = await pool.fetch(
        "SELECT s.id, s.status, count(m.id) AS n FROM scheduled_replies s"
        " LEFT JOIN messages m ON m.scheduled_reply_id = s.id GROUP BY s.id, s.status"
    )
    assert {r["id"] for r in rows} == set(ids)
    assert all(r["status"] == "sending" and r["n"] == 1 for r in rows)
    tasks_seen = [orjson.loads(t.body)["messageId"] for t in await drain(settings, "mailgw.delivery")]
    assert len(tasks_seen) == 24 and len(set(tasks_seen)) == 24
    assert await pool.fetchval("SELECT used FROM daily_usage WHERE subject_id = $1", setup.mailbox_id) == 24


async def test_scheduler_records_failure(
    client: Client, pool: asyncpg.Pool, settings: Settings, setup: Setup
) -> None:
    conv = await conversation(pool, setup)
    body = {"body": "later", "scheduledFor": iso(now() + timedelta(hours=1))}
    rid = (await _reply(client, setup, conv, body))["data"]["id"]
    await pool.execute("UPDATE scheduled_replies SET scheduled_for = now()")
    await pool.execute("UPDATE mailboxes SET status = 'paused' WHERE id = $1", setup.mailbox_id)
    ctx = await open_context(fast(settings), "sched")
    try:
        assert await scheduler.tick(scheduler.Deps.of(ctx)) == (1, 0)
    finally:
        await close_context(ctx)
    detail = (await (await client.get(f"/v1/inbox/{conv}", headers=setup.headers)).json())["data"]
    assert detail["scheduledReplies"] == [{
        "_id": rid, "message": "later", "scheduledFor": detail["scheduledReplies"][0]["scheduledFor"],
        "status": "failed", "mailboxId": setup.mailbox_id,
        "createdAt": detail["scheduledReplies"][0]["createdAt"],
        "error": "The mailbox is no longer active",
    }]
    assert detail["messages"] == []
