"""GET /v1/inbox and /v1/inbox/{id}: shapes, filters, pagination; PATCH; workspace isolation."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from gateway.config import Settings
from gateway.db import workspaces as wsdb
from gateway.ids import new_id
from tests.integration.inbox.conftest import Setup, ago, conversation, message

pytestmark = pytest.mark.integration
Client = TestClient  # type: ignore[type-arg]


async def _get(client: Client, path: str, s: Setup, status: int = 200) -> Any:
    resp = await client.get(path, headers=s.headers)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_conversation_detail_shape(client: Client, pool: asyncpg.Pool, setup: Setup) -> None:
    conv = await conversation(pool, setup)
    sent = await message(pool, setup, conv, type="sent", direction="outbound", at=ago(300),
                         html="<p>Hi Bob</p>", rfc="<first@example.test>")
    reply = await message(pool, setup, conv, type="reply", direction="inbound", at=ago(200),
                          subject="Re: Hello Bob", read=False, in_reply_to="<first@example.test>")
    manual = await message(pool, setup, conv, type="manual", direction="outbound", at=ago(100),
                           status="failed", error="550 no such user")
    await pool.execute(
        "INSERT INTO attachments (id, workspace_id, key, filename, content_type, size, message_id,"
        " conversation_id, position) VALUES ($1,$2,$3,'a.pdf','application/pdf',3,$4,$5,0)",
        new_id("att"), setup.ws, f"inbox-attachments/{setup.ws}/x/a.pdf", reply, conv,
    )
    await pool.execute(
        "INSERT INTO scheduled_replies (id, workspace_id, conversation_id, mailbox_id, payload,"
        " scheduled_for, status, error) VALUES ($1,$2,$3,$4,$5, now() + interval '1 hour', 'failed', 'boom')",
        "rpl_x", setup.ws, conv, setup.mailbox_id, {"body": "later"},
    )

    data = (await _get(client, f"/v1/inbox/{conv}", setup))["data"]
    assert data["id"] == conv
    assert data["lead"]["email"] == "bob@example.test" and data["lead"]["firstName"] == "Bob"
    assert set(data["lead"]) == {"_id", "email", "firstName", "lastName", "companyName", "jobTitle"}
    assert data["campaign"] == {"_id": "cmp_1", "name": "Spring"}
    assert data["identity"] == setup.handle
    assert data["mailbox"] == {"id": setup.mailbox_id, "email": setup.mailbox_email}
    assert data["isRead"] is False and data["unreadCount"] == 1
    assert data["status"] == "active" and data["aiTag"] is None and data["tags"] == []
    assert [m["id"] for m in data["messages"]] == [sent, reply, manual]
    s, r, m = data["messages"]
    assert s["type"] == "sent" and s["body"] == "<p>Hi Bob</p>" and s["sequenceStep"] == 1
    assert s["status"] == "sent" and s["opened"] is False and s["sentAt"].endswith("Z")
    assert s["messageId"] == "<first@example.test>"
    assert r["type"] == "reply" and r["isFromLead"] is True and r["read"] is False
    assert r["from"] == "bob@example.test" and r["content"] == "hi" and r["receivedAt"].endswith("Z")
    assert r["attachments"] == [{"filename": "a.pdf", "contentType": "application/pdf", "size": 3,
                                 "downloadUrl": f"/v1/inbox/{conv}/attachments/0"}]
    assert "status" not in r
    assert m["type"] == "manual" and m["direction"] == "outbound"
    assert m["status"] == "failed" and m["error"] == "550 no such user"
    assert data["scheduledReplies"] == [{
        "_id": "rpl_x", "message": "later", "scheduledFor": data["scheduledReplies"][0]["scheduledFor"],
        "status": "failed", "mailboxId": setup.mailbox_id,
        "createdAt": data["scheduledReplies"][0]["createdAt"], "error": "boom",
    }]


async def test_internal_states_show_as_queued(client: Client, pool: asyncpg.Pool, setup: Setup) -> None:
    conv = await conversation(pool, setup, campaign=None)
    for state in ("scheduled", "sending", "queued"):
        await message(pool, setup, conv, type="reply", direction="outbound", at=ago(10), status=state)
    data = (await _get(client, f"/v1/inbox/{conv}", setup))["data"]
    assert data["campaign"] is None
    assert {m["status"] for m in data["messages"]} == {"queued"}
    assert all(m["error"] is None for m in data["messages"])


async def test_list_order_filters_and_pagination(client: Client, pool: asyncpg.Pool, setup: Setup) -> None:
    old = await conversation(pool, setup, lead_email="zed@example.test", first="Zed", activity=ago(500),
                             tags=["vip"], ai_tag="interested")
    mid = await conversation(pool, setup, lead_email="ann@example.test", subject="Pricing question",
                             activity=ago(300), status="closed")
    new = await conversation(pool, setup, lead_email="max@example.test", activity=ago(100))
    await message(pool, setup, mid, type="reply", direction="inbound", at=ago(300), read=False,
                  lead_email="ann@example.test")

    body = await _get(client, "/v1/inbox", setup)
    assert [c["id"] for c in body["data"]] == [new, mid, old] and body["nextCursor"] is None
    assert "messages" not in body["data"][0]

    page1 = await _get(client, "/v1/inbox?limit=2", setup)
    assert [c["id"] for c in page1["data"]] == [new, mid] and page1["nextCursor"]
    page2 = await _get(client, f"/v1/inbox?limit=2&cursor={page1['nextCursor']}", setup)
    assert [c["id"] for c in page2["data"]] == [old] and page2["nextCursor"] is None

    async def ids(query: str) -> list[str]:
        return [c["id"] for c in (await _get(client, f"/v1/inbox?{query}", setup))["data"]]

    assert await ids("unread=true") == [mid]
    assert await ids("unread=false") == [new, old]
    assert await ids("tag=vip") == [old]
    assert await ids("aiTag=interested") == [old]
    assert await ids("status=closed") == [mid]
    assert await ids("q=pricing") == [mid]
    assert await ids("q=ZED") == [old]
    assert await ids(f"identity={setup.handle.upper()}") == [new, mid, old]
    assert await ids("identity=nobody@example.com") == []
    for bad in ("limit=0", "limit=101", "cursor=%%%", "status=weird"):
        resp = await client.get(f"/v1/inbox?{bad}", headers=setup.headers)
        assert resp.status == 400, bad
        assert (await resp.json())["details"]


async def test_patch(client: Client, pool: asyncpg.Pool, setup: Setup) -> None:
    conv = await conversation(pool, setup)
    await message(pool, setup, conv, type="reply", direction="inbound", at=ago(30), read=False)
    newest = await message(pool, setup, conv, type="reply", direction="inbound", at=ago(20), read=False)
    path = f"/v1/inbox/{conv}"

    resp = await client.patch(path, json={"markRead": True, "aiTag": "interested", "tags": ["a", "b"],
                                          "status": "closed"}, headers=setup.headers)
    assert resp.status == 200
    assert (await resp.json()) == {"success": True, "data": {
        "id": conv, "aiTag": "interested", "tags": ["a", "b"], "isRead": True, "unreadCount": 0}}

    resp = await client.patch(path, json={"markRead": False, "aiTag": None}, headers=setup.headers)
    data = (await resp.json())["data"]
    assert data == {"id": conv, "aiTag": None, "tags": ["a", "b"], "isRead": False, "unreadCount": 1}
    assert await pool.fetchval("SELECT read FROM messages WHERE id = $1", newest) is False
    detail = (await _get(client, path, setup))["data"]
    assert detail["status"] == "closed" and detail["unreadCount"] == 1

    for bad, field in (({"tags": ["x" * 65]}, "tags[0]"), ({"tags": [""]}, "tags[0]"),
                       ({"tags": ["t"] * 51}, "tags"), ({"markRead": "yes"}, "markRead"),
                       ({"status": "open"}, "status"), ({"color": "red"}, "color")):
        resp = await client.patch(path, json=bad, headers=setup.headers)
        assert resp.status == 400, bad
        assert field in [d["field"] for d in (await resp.json())["details"]], bad


async def test_every_route_is_404_across_workspaces(
    client: Client, pool: asyncpg.Pool, settings: Settings, setup: Setup, other: Setup
) -> None:
    conv = await conversation(pool, setup)
    reply = await message(pool, setup, conv, type="reply", direction="inbound", at=ago(10))
    await pool.execute(
        "INSERT INTO attachments (id, workspace_id, key, filename, content_type, size, message_id,"
        " conversation_id, position) VALUES ($1,$2,$3,'a.txt','text/plain',1,$4,$5,0)",
        new_id("att"), setup.ws, f"inbox-attachments/{setup.ws}/x/a.txt", reply, conv,
    )
    await pool.execute(
        "INSERT INTO scheduled_replies (id, workspace_id, conversation_id, mailbox_id, payload,"
        " scheduled_for) VALUES ('rpl_y', $1, $2, $3, '{}', now() + interval '1 hour')",
        setup.ws, conv, setup.mailbox_id,
    )
    await pool.execute("INSERT INTO jobs (id, workspace_id, type) VALUES ('forward_email_1_abcdefg', $1,"
                       " 'forward_email')", setup.ws)
    h = other.headers
    calls = [
        client.get(f"/v1/inbox/{conv}", headers=h),
        client.patch(f"/v1/inbox/{conv}", json={"markRead": True}, headers=h),
        client.post(f"/v1/inbox/{conv}/reply", json={"body": "hi"}, headers=h),
        client.post(f"/v1/inbox/{conv}/forward", json={"toEmails": ["x@example.test"]}, headers=h),
        client.delete(f"/v1/inbox/{conv}/scheduled/rpl_y", headers=h),
        client.get(f"/v1/inbox/{conv}/attachments/0", headers=h),
        client.get(f"/v1/inbox/attachments/inbox-attachments/{setup.ws}/x/a.txt", headers=h),
        client.get("/v1/jobs/forward_email_1_abcdefg", headers=h),
        client.get("/api/jobs/forward_email_1_abcdefg", headers=h),
    ]
    for call in calls:
        resp = await call
        assert resp.status == 404, (resp.url, await resp.text())
        assert (await resp.json())["code"] == 404
    assert (await _get(client, "/v1/inbox", other))["data"] == []
    # Nothing changed in the owner's workspace.
    assert await pool.fetchval("SELECT status FROM scheduled_replies WHERE id = 'rpl_y'") == "pending"
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE conversation_id = $1", conv) == 1
    # The owner still sees everything.
    assert (await client.get(f"/v1/inbox/{conv}/attachments/0", headers=setup.headers)).status in (200, 404)
    assert (await _get(client, "/api/jobs/forward_email_1_abcdefg", setup))["data"]["status"] == "pending"


async def test_platform_key_names_the_workspace(
    client: Client, pool: asyncpg.Pool, setup: Setup, other: Setup
) -> None:
    conv = await conversation(pool, setup)
    key, _ = await wsdb.insert_key(pool, kind="platform", operator_id=setup.tenant.operator_id,
                                   workspace_id=None, name="ops")
    h = {"Authorization": f"Bearer {key}", "X-Workspace-Id": setup.ws}
    resp = await client.get(f"/v1/inbox/{conv}", headers=h)
    assert resp.status == 200 and (await resp.json())["data"]["id"] == conv
    resp = await client.get("/v1/inbox", headers={"Authorization": f"Bearer {key}"})
    assert resp.status == 400
    # A workspace of another operator is 404, as if it did not exist.
    resp = await client.get("/v1/inbox", headers={**h, "X-Workspace-Id": other.ws})
    assert resp.status == 404
    assert (await client.get("/v1/inbox")).status == 401
