"""SPEC.md from the outside, the inbox API and jobs: replies now and scheduled, forwards as jobs,
PATCH rules, reply attachments, list order and filters."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest

from tests.integration.conformance.conftest import (
    Api,
    Tenant,
    assert_error,
    create_workspace,
)
from tests.integration.conformance.helpers import (
    TS,
    WAIT,
    iso_in,
    send,
    until,
)
from tests.support.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration


async def test_inbox_reply_scheduled_and_cancel(api: Api, tenant: Tenant, sink: SmtpSink) -> None:
    r = await send(api, tenant, {"to": "lead@example.test", "subject": "Demo", "text": "hi"})
    assert r.status == 202, r.text()
    first = r.body["messages"][0]
    conv = first["convId"]
    later = iso_in(3600)
    r = await api.call("POST", f"/v1/inbox/{conv}/reply", key=tenant.key,
                       json_body={"body": "<p>later</p>", "scheduledFor": later})
    assert r.status == 202, r.text()
    assert r.body["success"] is True
    d = r.body["data"]
    assert set(d) == {"id", "status", "scheduledFor", "isScheduled"}, d
    assert d["id"].startswith("rpl_") and d["status"] == "pending" and d["isScheduled"] is True
    assert TS.match(d["scheduledFor"]), d
    r = await api.call("GET", f"/v1/inbox/{conv}", key=tenant.key)
    [sr] = r.body["data"]["scheduledReplies"]
    assert sr["_id"] == d["id"] and sr["status"] == "pending" and TS.match(sr["createdAt"])
    assert {"_id", "message", "scheduledFor", "status", "mailboxId", "createdAt"} <= set(sr)
    r = await api.call("DELETE", f"/v1/inbox/{conv}/scheduled/{d['id']}", key=tenant.key)
    assert r.status == 204 and r.raw == b""
    r = await api.call("GET", f"/v1/inbox/{conv}", key=tenant.key)
    assert r.body["data"]["scheduledReplies"] == []
    # reply now
    r = await api.call("POST", f"/v1/inbox/{conv}/reply", key=tenant.key, json_body={"body": "<p>now</p>"})
    assert r.status == 202, r.text()
    assert r.body["data"]["isScheduled"] is False and r.body["data"]["id"].startswith("rpl_")
    received = await sink.wait_for(2, timeout=WAIT)
    rep = next(m for m in received if str(m.message["Message-ID"]).strip() != first["id"])
    assert rep.message["Subject"] == "Re: Demo"
    assert str(rep.message["In-Reply-To"]).strip() == first["id"]
    assert first["id"] in str(rep.message["References"])


async def test_forward_is_a_job(api: Api, tenant: Tenant, sink: SmtpSink) -> None:
    r = await send(api, tenant, {"to": "lead@example.test", "subject": "Deal", "text": "hi"})
    assert r.status == 202, r.text()
    conv = r.body["messages"][0]["convId"]
    r = await api.call("POST", f"/v1/inbox/{conv}/forward", key=tenant.key,
                       json_body={"toEmails": ["boss@example.test", "cc1@example.test"],
                                  "body": "<p>FYI</p>"})
    assert r.status == 202, r.text()
    d = r.body["data"]
    assert re.fullmatch(r"forward_email_\d{13}_[a-z0-9]{7}", d["jobId"]), d
    assert d["status"] == "pending"
    assert d["message"] == "Forward queued. Poll worker /api/jobs/:jobId for status."

    async def done() -> dict[str, Any] | None:
        r = await api.call("GET", f"/api/jobs/{d['jobId']}", key=tenant.key)
        assert r.status == 200, r.text()
        job: dict[str, Any] = r.body["data"]
        return job if job["status"] in ("completed", "failed") else None

    job = await until(done, "forward job to finish")
    assert job["status"] == "completed", job
    assert {"jobId", "type", "status", "result", "error", "createdAt", "updatedAt"} <= set(job)
    r = await api.call("GET", f"/v1/jobs/{d['jobId']}", key=tenant.key)
    assert r.status == 200 and r.body["data"]["jobId"] == d["jobId"]
    received = await sink.wait_for(2, timeout=WAIT)
    fwd = next(m for m in received if str(m.message["Subject"]).startswith("Fwd:"))
    assert fwd.message["Subject"] == "Fwd: Deal"
    assert fwd.rcpt_tos[0] == "boss@example.test" and "cc1@example.test" in fwd.rcpt_tos
    assert "---------- Forwarded message ---------" in fwd.raw.decode(errors="replace")
    other = await create_workspace(api, "Other")
    assert_error(await api.call("GET", f"/api/jobs/{d['jobId']}", key=other.key), 404)
    err = assert_error(await api.call("POST", f"/v1/inbox/{conv}/forward", key=tenant.key,
                                      json_body={"toEmails": []}), 400)
    assert any(x["field"] == "toEmails" for x in err.get("details", [])), err


async def test_inbox_patch_rules(api: Api, tenant: Tenant) -> None:
    r = await send(api, tenant, {"to": "p@example.test", "subject": "s", "text": "t"})
    conv = r.body["messages"][0]["convId"]
    path = f"/v1/inbox/{conv}"
    for bad in ({"tags": [""]}, {"tags": ["x" * 65]}, {"tags": [f"t{i}" for i in range(51)]},
                {"tags": "vip"}, {"status": "archived"}, {"markRead": "yes"}, {"nope": 1}):
        assert_error(await api.call("PATCH", path, key=tenant.key, json_body=bad), 400)
    r = await api.call("PATCH", path, key=tenant.key, json_body={"status": "closed", "aiTag": "x"})
    assert r.status == 200, r.text()
    r = await api.call("PATCH", path, key=tenant.key, json_body={"aiTag": None})
    assert r.status == 200 and r.body["data"]["aiTag"] is None, r.text()
    r = await api.call("GET", "/v1/inbox", key=tenant.key, params={"status": "closed"})
    assert [c["id"] for c in r.body["data"]] == [conv]
    r = await api.call("GET", "/v1/inbox", key=tenant.key, params={"status": "active"})
    assert r.body["data"] == []
    r = await api.call("GET", path, key=tenant.key)
    assert r.body["data"]["status"] == "closed"


async def test_reply_attachments_download_and_scheduled_reply_due(
    api: Api, tenant: Tenant, sink: SmtpSink
) -> None:
    r = await send(api, tenant, {"to": "lead@example.test", "subject": "Files", "text": "t"})
    first = r.body["messages"][0]
    conv = first["convId"]
    form = aiohttp.FormData()
    form.add_field("file", b"col1,col2\n1,2\n", filename="data.csv", content_type="text/csv")
    up = (await api.call("POST", "/v1/inbox/attachments/upload", key=tenant.key, data=form)).body["data"]
    r = await api.call("POST", f"/v1/inbox/{conv}/reply", key=tenant.key,
                       json_body={"body": "attached", "attachments": [{"url": up["url"], "key": up["key"]}]})
    assert r.status == 202, r.text()
    received = await sink.wait_for(2, timeout=WAIT)
    files = [(p.get_filename(), p.get_content()) for p in received[-1].message.iter_attachments()]
    want = b"col1,col2\n1,2\n"
    assert any(f == "data.csv" and c in (want, want.decode()) for f, c in files), files
    c = (await api.call("GET", f"/v1/inbox/{conv}", key=tenant.key)).body["data"]
    rep = c["messages"][-1]
    assert rep["type"] == "reply" and rep["isFromLead"] is False, rep
    [att] = rep["attachments"]
    assert att == {"filename": "data.csv", "contentType": "text/csv", "size": 14,
                   "downloadUrl": f"/v1/inbox/{conv}/attachments/0"}, att
    async with aiohttp.ClientSession() as s, s.get(
        api.gw.base_url + att["downloadUrl"], headers={"X-Api-Key": tenant.key}
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/csv")
        assert "data.csv" in resp.headers.get("Content-Disposition", "")
        assert await resp.read() == b"col1,col2\n1,2\n"
    assert_error(await api.call("GET", f"/v1/inbox/{conv}/attachments/1", key=tenant.key), 404)
    # a scheduled reply becomes due, is sent, and leaves the pending list; cancelling it then is 409
    r = await api.call("POST", f"/v1/inbox/{conv}/reply", key=tenant.key,
                       json_body={"body": "soon", "scheduledFor": iso_in(2)})
    assert r.status == 202, r.text()
    rpl = r.body["data"]["id"]
    await sink.wait_for(3, timeout=WAIT)

    async def gone() -> bool:
        c = (await api.call("GET", f"/v1/inbox/{conv}", key=tenant.key)).body["data"]
        return all(x["_id"] != rpl for x in c["scheduledReplies"])

    await until(gone, "the sent scheduled reply to leave scheduledReplies")
    assert_error(await api.call("DELETE", f"/v1/inbox/{conv}/scheduled/{rpl}", key=tenant.key), 409)


async def all_sent(api: Api, t: Tenant, conv: str) -> None:
    async def check() -> bool:
        c = (await api.call("GET", f"/v1/inbox/{conv}", key=t.key)).body["data"]
        return all(m.get("status") == "sent" for m in c["messages"])

    await until(check, f"every message of {conv} to be sent")


async def test_inbox_list_order_and_filters(api: Api, tenant: Tenant) -> None:
    ids = []
    # one at a time, each delivered before the next, so "activity" is ordered whichever
    # moment (acceptance or delivery) the gateway counts
    for who in ("old@example.test", "new@example.test"):
        r = await send(api, tenant, {"to": who, "subject": f"to {who}", "text": "t"})
        assert r.status == 202, r.text()
        ids.append(r.body["messages"][0]["convId"])
        await all_sent(api, tenant, ids[-1])
    r = await api.call("GET", "/v1/inbox", key=tenant.key)
    assert [c["id"] for c in r.body["data"]] == ids[::-1], "newest activity first"
    r = await send(api, tenant, {"convId": ids[0], "text": "bump"})
    assert r.status == 202, r.text()
    await all_sent(api, tenant, ids[0])
    r = await api.call("GET", "/v1/inbox", key=tenant.key)
    assert [c["id"] for c in r.body["data"]] == ids, "a reply is activity"
    r = await api.call("GET", "/v1/inbox", key=tenant.key, params={"identity": tenant.handle})
    assert len(r.body["data"]) == 2
    r = await api.call("GET", "/v1/inbox", key=tenant.key, params={"identity": "someone@example.com"})
    assert r.body["data"] == []
    r = await api.call("GET", "/v1/inbox", key=tenant.key, params={"unread": "true"})
    assert r.body["data"] == [], "no lead replies yet"
    r = await api.call("GET", "/v1/inbox", key=tenant.key, params={"limit": "1"})
    assert len(r.body["data"]) == 1 and r.body["nextCursor"]
    page2 = {"limit": "1", "cursor": r.body["nextCursor"]}
    r = await api.call("GET", "/v1/inbox", key=tenant.key, params=page2)
    assert [c["id"] for c in r.body["data"]] == [ids[1]] and r.body["nextCursor"] is None
