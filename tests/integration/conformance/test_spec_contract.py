"""SPEC.md statements checked from the outside: the real `mailgw all`, HTTP only, an SMTP sink
and a local webhook receiver. Each test names the SPEC rule a client relies on."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.integration.conformance.conftest import (
    MAILGW,
    MAX_ATTACHMENT_BYTES,
    MAX_BODY_BYTES,
    Api,
    Gateway,
    Resp,
    Tenant,
    assert_error,
    create_identity,
    create_mailbox,
    create_workspace,
    make_tenant,
)
from tests.support.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration

TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
RFC_ID = re.compile(r"^<[^<>@\s]+@[^<>@\s]+>$")
WAIT = 20.0  # seconds any asynchronous outcome (delivery, event) may take on loopback


def iso_in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


async def until(
    check: Callable[[], Awaitable[Any]], what: str, timeout: float = WAIT  # noqa: ASYNC109
) -> Any:
    """Poll `check` (bounded) until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


async def send(api: Api, t: Tenant, body: dict[str, Any], **kw: Any) -> Resp:
    return await api.call("POST", t.send_path, key=t.key, json_body=body, **kw)


# -- ops, OpenAPI, request ids ----------------------------------------------------------------

SPEC_OPERATIONS = [
    ("post", "/v1/identities/{handle}/send"),
    ("get", "/v1/inbox"),
    ("get", "/v1/inbox/{id}"),
    ("patch", "/v1/inbox/{id}"),
    ("post", "/v1/inbox/{id}/reply"),
    ("delete", "/v1/inbox/{id}/scheduled/{replyId}"),
    ("post", "/v1/inbox/{id}/forward"),
    ("get", "/api/jobs/{jobId}"),
    ("get", "/v1/jobs/{jobId}"),
    ("post", "/v1/inbox/attachments/upload"),
    ("get", "/v1/inbox/{id}/attachments/{n}"),
    ("post", "/v1/workspaces"),
    ("get", "/v1/workspaces"),
    ("post", "/v1/workspaces/{id}/keys"),
    ("get", "/v1/workspaces/{id}/keys"),
    ("delete", "/v1/keys/{prefix}"),
    ("post", "/v1/mailboxes"),
    ("get", "/v1/mailboxes"),
    ("get", "/v1/mailboxes/{id}"),
    ("patch", "/v1/mailboxes/{id}"),
    ("delete", "/v1/mailboxes/{id}"),
    ("post", "/v1/identities"),
    ("get", "/v1/identities"),
    ("get", "/v1/identities/{handle}"),
    ("patch", "/v1/identities/{handle}"),
    ("delete", "/v1/identities/{handle}"),
    ("post", "/v1/webhooks"),
    ("get", "/v1/webhooks"),
    ("get", "/v1/webhooks/{id}"),
    ("patch", "/v1/webhooks/{id}"),
    ("delete", "/v1/webhooks/{id}"),
    ("post", "/v1/webhooks/{id}/rotate-secret"),
    ("get", "/v1/webhooks/{id}/deliveries"),
    ("post", "/v1/webhooks/{id}/deliveries/{deliveryId}/retry"),
    ("post", "/v1/webhooks/{id}/test"),
    ("get", "/v1/suppressions"),
    ("post", "/v1/suppressions"),
    ("delete", "/v1/suppressions/{email}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
]


async def test_ops_endpoints_and_openapi_document(api: Api) -> None:
    r = await api.call("GET", "/healthz")
    assert r.status == 200 and r.headers.get("X-Request-Id")
    r = await api.call("GET", "/readyz")
    assert r.status == 200 and r.headers.get("X-Request-Id")
    r = await api.call("GET", "/metrics")
    assert r.status == 200 and r.headers.get("X-Request-Id")
    assert r.headers["Content-Type"].startswith("text/plain"), r.headers
    assert "# TYPE " in r.text()
    r = await api.call("GET", "/openapi.json")
    assert r.status == 200 and r.headers.get("X-Request-Id")
    doc = r.body
    assert re.fullmatch(r"3\.1\.\d+", doc["openapi"]), doc["openapi"]
    missing = [f"{m.upper()} {p}" for m, p in SPEC_OPERATIONS if m not in doc["paths"].get(p, {})]
    assert not missing, f"SPEC operations absent from /openapi.json: {missing}"


async def test_request_id_echoed_and_present_on_every_kind_of_response(api: Api, tenant: Tenant) -> None:
    rid = f"trace-{secrets.token_hex(6)}"
    for method, path, key in [
        ("GET", "/healthz", None),
        ("GET", "/v1/mailboxes", tenant.key),
        ("GET", "/v1/mailboxes", None),  # 401
        ("GET", "/v1/no-such-route", tenant.key),  # 404
        ("PUT", "/v1/mailboxes", tenant.key),  # 405
    ]:
        r = await api.call(method, path, key=key, headers={"X-Request-Id": rid})
        assert r.headers.get("X-Request-Id") == rid, (method, path, r.status, r.headers)
        r = await api.call(method, path, key=key)
        assert r.headers.get("X-Request-Id"), (method, path, r.status)
        if r.status >= 400:
            assert_error(r)


# -- authentication and authorisation ---------------------------------------------------------


async def test_both_auth_headers_and_401_for_missing_unknown_revoked_keys(api: Api, tenant: Tenant) -> None:
    for bearer in (False, True):
        r = await api.call("GET", "/v1/mailboxes", key=tenant.key, bearer=bearer)
        assert r.status == 200, r.text()
        r = await api.call("GET", "/v1/workspaces", key=tenant.platform_key, bearer=bearer)
        assert r.status == 200, r.text()
    assert_error(await api.call("GET", "/v1/mailboxes"), 401)
    assert_error(await api.call("GET", "/v1/mailboxes", key="sk_" + secrets.token_hex(24)), 401)
    assert_error(await api.call("GET", "/v1/mailboxes", key="sk_user_" + secrets.token_hex(24)), 401)
    assert_error(await api.call("GET", "/v1/mailboxes", key="not a key at all"), 401)
    assert_error(
        await api.call("GET", "/v1/mailboxes", headers={"Authorization": "Basic dXNlcjpwdw=="}), 401
    )
    # revoke: 204 with no body, and the key stops working at once, on both headers
    r = await api.call("DELETE", f"/v1/keys/{tenant.key_prefix}", key=tenant.platform_key)
    assert r.status == 204 and r.raw == b"", (r.status, r.raw)
    for bearer in (False, True):
        assert_error(await api.call("GET", "/v1/mailboxes", key=tenant.key, bearer=bearer), 401)
    r = await api.call("GET", f"/v1/workspaces/{tenant.workspace_id}/keys", key=tenant.platform_key)
    assert r.status == 200
    assert all("key" not in k for k in r.body["data"]), "keys are listed by prefix only"


async def test_workspace_key_is_403_on_platform_routes(api: Api, tenant: Tenant) -> None:
    assert_error(await api.call("POST", "/v1/workspaces", key=tenant.key, json_body={"name": "x"}), 403)
    assert_error(await api.call("GET", "/v1/workspaces", key=tenant.key), 403)
    r = await api.call("POST", f"/v1/workspaces/{tenant.workspace_id}/keys", key=tenant.key, json_body={})
    assert_error(r, 403)


async def test_platform_key_names_the_workspace_with_x_workspace_id(api: Api, tenant: Tenant) -> None:
    pk = tenant.platform_key
    for path in ("/v1/mailboxes", "/v1/identities", "/v1/inbox", "/v1/suppressions", "/v1/webhooks"):
        assert_error(await api.call("GET", path, key=pk), 400)
        r = await api.call("GET", path, key=pk, headers={"X-Workspace-Id": tenant.workspace_id})
        assert r.status == 200, (path, r.text())
        assert r.body["success"] is True
    r = await api.call("GET", "/v1/mailboxes", key=pk, headers={"X-Workspace-Id": tenant.workspace_id})
    assert [m["id"] for m in r.body["data"]] == [m["id"] for m in tenant.mailboxes]
    # sending on behalf of the workspace works the same way
    assert_error(await api.call("POST", tenant.send_path, key=pk,
                                json_body={"to": "a@example.test", "subject": "s", "text": "t"}), 400)


async def test_other_workspaces_resources_are_404_exactly_like_missing_ones(
    api: Api, sink: SmtpSink
) -> None:
    a = await make_tenant(api, sink, "Acme")
    b = await make_tenant(api, sink, "Globex")
    r = await send(api, a, {"to": "lead@example.test", "subject": "Hello", "text": "Hi"})
    assert r.status == 202, r.text()
    conv = r.body["messages"][0]["convId"]
    r = await api.call("POST", "/v1/webhooks", key=a.key, json_body={"url": "http://127.0.0.1:9/hook"})
    assert r.status == 201, r.text()
    whk = r.body["data"]["id"]
    pairs = [
        ("GET", f"/v1/mailboxes/{a.mailboxes[0]['id']}", "/v1/mailboxes/mbx_doesnotexist0000", None),
        ("PATCH", f"/v1/mailboxes/{a.mailboxes[0]['id']}", "/v1/mailboxes/mbx_doesnotexist0000",
         {"dailyCap": 5}),
        ("DELETE", f"/v1/mailboxes/{a.mailboxes[0]['id']}", "/v1/mailboxes/mbx_doesnotexist0000", None),
        ("GET", f"/v1/identities/{a.handle}", "/v1/identities/nobody@example.com", None),
        ("DELETE", f"/v1/identities/{a.handle}", "/v1/identities/nobody@example.com", None),
        ("GET", f"/v1/inbox/{conv}", "/v1/inbox/conv_doesnotexist0000", None),
        ("PATCH", f"/v1/inbox/{conv}", "/v1/inbox/conv_doesnotexist0000", {"tags": ["x"]}),
        ("POST", f"/v1/inbox/{conv}/reply", "/v1/inbox/conv_doesnotexist0000/reply", {"body": "hi"}),
        ("POST", f"/v1/inbox/{conv}/forward", "/v1/inbox/conv_doesnotexist0000/forward",
         {"toEmails": ["x@example.test"]}),
        ("GET", f"/v1/webhooks/{whk}", "/v1/webhooks/whk_doesnotexist0000", None),
        ("DELETE", f"/v1/webhooks/{whk}", "/v1/webhooks/whk_doesnotexist0000", None),
        ("GET", f"/v1/workspaces/{a.workspace_id}", "/v1/workspaces/ws_doesnotexist0000", None),
        ("GET", f"/v1/workspaces/{a.workspace_id}/keys", "/v1/workspaces/ws_doesnotexist0000/keys", None),
        ("DELETE", f"/v1/keys/{a.key_prefix}", "/v1/keys/sk_nope", None),
        ("POST", f"/v1/identities/{a.handle}/send", "/v1/identities/nobody@example.com/send",
         {"to": "lead@example.test", "subject": "x", "text": "y"}),
    ]
    for method, foreign, missing, body in pairs:
        rf = await api.call(method, foreign, key=b.key, json_body=body)
        rm = await api.call(method, missing, key=b.key, json_body=body)
        assert_error(rf, 404)
        assert_error(rm, 404)
        assert rf.body == rm.body, (method, foreign, rf.body, rm.body)
    # a reply through B's own identity naming A's conversation: 404 too
    assert_error(await send(api, b, {"convId": conv, "text": "hello"}), 404)
    # A's resources survived B's attempts
    assert (await api.call("GET", f"/v1/mailboxes/{a.mailboxes[0]['id']}", key=a.key)).status == 200
    assert (await api.call("GET", f"/v1/inbox/{conv}", key=a.key)).status == 200
    assert (await api.call("GET", f"/v1/webhooks/{whk}", key=a.key)).status == 200
    assert (await api.call("GET", "/v1/mailboxes", key=a.key)).status == 200  # key not revoked


# -- conventions: lists, timestamps, ids, bodies ----------------------------------------------


async def test_list_envelope_cursor_and_limit_bounds(api: Api, tenant: Tenant, sink: SmtpSink) -> None:
    await create_mailbox(api, tenant, sink, "second@tryacme.example")
    await create_mailbox(api, tenant, sink, "third@tryacme.example")
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        params = {"limit": "1"} | ({"cursor": cursor} if cursor else {})
        r = await api.call("GET", "/v1/mailboxes", key=tenant.key, params=params)
        assert r.status == 200, r.text()
        assert set(r.body) == {"success", "data", "nextCursor"}, r.body
        assert r.body["success"] is True and len(r.body["data"]) == 1
        seen.append(r.body["data"][0]["id"])
        cursor = r.body["nextCursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str) and cursor
    assert sorted(seen) == sorted(m["id"] for m in tenant.mailboxes), seen
    r = await api.call("GET", "/v1/mailboxes", key=tenant.key)
    assert len(r.body["data"]) == 3 and r.body["nextCursor"] is None
    pk, ws = tenant.platform_key, {"X-Workspace-Id": tenant.workspace_id}
    for path in ("/v1/mailboxes", "/v1/identities", "/v1/inbox", "/v1/suppressions", "/v1/webhooks",
                 "/v1/workspaces"):
        for bad in ("0", "101", "-1", "abc", "1.5"):
            r = await api.call("GET", path, key=pk, headers=ws, params={"limit": bad})
            assert_error(r, 400)
        for good in ("1", "100"):
            r = await api.call("GET", path, key=pk, headers=ws, params={"limit": good})
            assert r.status == 200, (path, good, r.text())
            assert set(r.body) == {"success", "data", "nextCursor"}
    r = await api.call("GET", "/v1/mailboxes", key=tenant.key, params={"cursor": "!!garbage!!"})
    assert_error(r, 400)


async def test_created_objects_ids_timestamps_status_codes(api: Api, tenant: Tenant, sink: SmtpSink) -> None:
    assert tenant.workspace_id.startswith("ws_")
    assert tenant.key.startswith("sk_") and not tenant.key.startswith("sk_user_")
    assert tenant.key.startswith(tenant.key_prefix)
    mbx = tenant.mailboxes[0]
    assert mbx["id"].startswith("mbx_")
    assert tenant.identity["id"].startswith("idn_")
    for obj in (mbx, tenant.identity):
        for k in ("createdAt", "updatedAt"):
            assert TS.match(obj[k]), (k, obj[k])
    r = await api.call("GET", f"/v1/workspaces/{tenant.workspace_id}", key=tenant.platform_key)
    assert r.status == 200 and TS.match(r.body["data"]["createdAt"]), r.text()
    # passwords are write-only
    r = await api.call("GET", f"/v1/mailboxes/{mbx['id']}", key=tenant.key)
    assert r.status == 200 and r.body["success"] is True
    assert "sink-pw" not in r.text()
    assert {"healthy", "unhealthy"} >= {r.body["data"]["health"]["status"]}
    # update 200, delete 204 without a body, then 404
    r = await api.call("PATCH", f"/v1/mailboxes/{mbx['id']}", key=tenant.key, json_body={"dailyCap": 7})
    assert r.status == 200 and r.body["data"]["dailyCap"] == 7, r.text()
    extra = await create_mailbox(api, tenant, sink, "spare@tryacme.example")
    r = await api.call("DELETE", f"/v1/mailboxes/{extra['id']}", key=tenant.key)
    assert r.status == 204 and r.raw == b""
    assert_error(await api.call("GET", f"/v1/mailboxes/{extra['id']}", key=tenant.key), 404)
    # suppressions: create 201, delete 204
    r = await api.call("POST", "/v1/suppressions", key=tenant.key, json_body={"email": "x@example.test"})
    assert r.status == 201, r.text()
    r = await api.call("DELETE", "/v1/suppressions/x@example.test", key=tenant.key)
    assert r.status == 204 and r.raw == b""


async def test_body_rules_unknown_field_malformed_json_413_415(api: Api, tenant: Tenant) -> None:
    body = {"email": "new@tryacme.example",
            "smtp": {"host": "127.0.0.1", "port": 25, "security": "none", "password": "p"},
            "bogusField": 1}
    err = assert_error(await api.call("POST", "/v1/mailboxes", key=tenant.key, json_body=body), 400)
    assert any(d["field"] == "bogusField" for d in err.get("details", [])), err
    body.pop("bogusField")
    body["smtp"]["nope"] = True  # type: ignore[index]
    err = assert_error(await api.call("POST", "/v1/mailboxes", key=tenant.key, json_body=body), 400)
    assert any(d["field"] == "smtp.nope" for d in err.get("details", [])), err
    send_body = {"to": "lead@example.test", "subject": "s", "text": "t", "whatever": 1}
    err = assert_error(await send(api, tenant, send_body), 400)
    assert any(d["field"] == "whatever" for d in err.get("details", [])), err
    # invalid address in an array: the detail names the index
    err = assert_error(await send(api, tenant, {"to": ["ok@example.test", "not-an-address"],
                                                "subject": "s", "text": "t"}), 400)
    assert any(d["field"] == "to[1]" for d in err.get("details", [])), err
    hdr = {"Content-Type": "application/json"}
    for path in ("/v1/mailboxes", tenant.send_path, "/v1/suppressions"):
        assert_error(await api.call("POST", path, key=tenant.key, data=b'{"to": ', headers=hdr), 400)
        assert_error(await api.call("POST", path, key=tenant.key, data=b"[1, 2]", headers=hdr), 400)
        r = await api.call("POST", path, key=tenant.key, data=b'{"email": "a@example.test"}',
                           headers={"Content-Type": "text/plain"})
        assert_error(r, 415)
        big = json.dumps({"text": "x" * (MAX_BODY_BYTES + 10)}).encode()
        assert_error(await api.call("POST", path, key=tenant.key, data=big, headers=hdr), 413)


async def test_naive_and_past_timestamps_are_400(api: Api, tenant: Tenant) -> None:
    base = {"to": "lead@example.test", "subject": "s", "text": "t"}
    naive = (datetime.now(UTC) + timedelta(hours=1)).replace(tzinfo=None).isoformat(timespec="seconds")
    err = assert_error(await send(api, tenant, base | {"sendAt": naive}), 400)
    assert any(d["field"] == "sendAt" for d in err.get("details", [])), err
    err = assert_error(await send(api, tenant, base | {"sendAt": iso_in(-3600)}), 400)
    assert any(d["field"] == "sendAt" for d in err.get("details", [])), err
    r = await send(api, tenant, base)
    assert r.status == 202, r.text()
    conv = r.body["messages"][0]["convId"]
    err = assert_error(await api.call("POST", f"/v1/inbox/{conv}/reply", key=tenant.key,
                                      json_body={"body": "x", "scheduledFor": naive}), 400)
    assert any(d["field"] == "scheduledFor" for d in err.get("details", [])), err
    assert_error(await api.call("POST", f"/v1/inbox/{conv}/reply", key=tenant.key,
                                json_body={"body": "x", "scheduledFor": iso_in(-60)}), 400)
    # any offset is accepted
    later = (datetime.now(UTC) + timedelta(hours=2)).astimezone(
        timezone(timedelta(hours=5, minutes=30))).isoformat()
    r = await send(api, tenant, base | {"to": "other@example.test", "sendAt": later})
    assert r.status == 202, r.text()


# -- send API ---------------------------------------------------------------------------------


def check_send_body(body: dict[str, Any], t: Tenant) -> None:
    assert set(body) == {"accepted", "rejected", "remaining", "dailyCap", "identity", "messages"}, body
    assert body["identity"] == t.handle
    assert body["accepted"] == sum(m["status"] == "accepted" for m in body["messages"])
    assert body["rejected"] == sum(m["status"] == "rejected" for m in body["messages"])
    for m in body["messages"]:
        if m["status"] == "accepted":
            assert set(m) == {"to", "id", "status", "convId", "affinity", "account"}, m
            assert RFC_ID.match(m["id"]), m
            assert m["convId"].startswith("conv_"), m
            assert m["affinity"] in ("new", "existing", "reassigned"), m
            assert set(m["account"]) == {"id", "email"} and m["account"]["id"].startswith("mbx_"), m
        else:
            assert m["status"] == "rejected", m
            assert m.get("reason") in ("cap_exceeded", "suppressed", "no_mailbox"), m


async def test_send_to_array_one_conversation_per_recipient(api: Api, sink: SmtpSink) -> None:
    t = await make_tenant(api, sink, identity_cap=150)
    r = await send(api, t, {"to": ["morgan@northwind.example", "Sam@NorthWind.example"],
                            "subject": "Quick question", "text": "Hello there",
                            "metadata": {"campaignStep": 1}})
    assert r.status == 202, r.text()
    body = r.body
    check_send_body(body, t)
    assert body["accepted"] == 2 and body["rejected"] == 0
    assert body["dailyCap"] == 150 and body["remaining"] == 148
    msgs = body["messages"]
    assert [m["status"] for m in msgs] == ["accepted", "accepted"]
    assert len({m["convId"] for m in msgs}) == 2 and len({m["id"] for m in msgs}) == 2
    assert all(m["affinity"] == "new" for m in msgs)
    assert all(m["account"] == {"id": t.mailboxes[0]["id"], "email": t.mailboxes[0]["email"]} for m in msgs)
    received = await sink.wait_for(2, timeout=WAIT)
    by_id = {str(m.message["Message-ID"]).strip(): m for m in received}
    for m in msgs:
        got = by_id.get(m["id"])
        assert got is not None, f"sink did not receive {m['id']}: {list(by_id)}"
        assert got.message["Subject"] == "Quick question"
        assert len(got.rcpt_tos) == 1 and got.rcpt_tos[0].lower() == m["to"].lower()
        assert t.mailboxes[0]["email"] in str(got.message["From"])
        assert "Alice" in str(got.message["From"]), got.message["From"]  # identity displayName
    # the conversation the send created is what the inbox API reads
    conv = msgs[0]["convId"]
    r = await api.call("GET", f"/v1/inbox/{conv}", key=t.key)
    assert r.status == 200, r.text()
    assert r.body["success"] is True
    c = r.body["data"]
    for k in ("id", "lead", "campaign", "status", "aiTag", "tags", "isRead", "unreadCount", "identity",
              "mailbox", "messages", "scheduledReplies"):
        assert k in c, (k, c)
    assert c["id"] == conv and c["identity"] == t.handle and c["status"] == "active"
    assert c["lead"]["email"].lower() == "morgan@northwind.example"
    assert set(c["lead"]) >= {"_id", "email", "firstName", "lastName", "companyName", "jobTitle"}
    assert c["mailbox"] == {"id": t.mailboxes[0]["id"], "email": t.mailboxes[0]["email"]}
    assert c["tags"] == [] and c["aiTag"] is None and c["scheduledReplies"] == []
    assert c["isRead"] is True and c["unreadCount"] == 0
    [m0] = c["messages"]
    assert m0["type"] == "sent" and m0["id"].startswith("msg_") and m0["messageId"] == msgs[0]["id"]
    for k in ("subject", "body", "sentAt", "sequenceStep", "opened", "clicked", "status"):
        assert k in m0, (k, m0)
    assert m0["subject"] == "Quick question" and "Hello there" in m0["body"]

    async def sent() -> bool:
        r = await api.call("GET", f"/v1/inbox/{conv}", key=t.key)
        return bool(r.body["data"]["messages"][0]["status"] == "sent")

    await until(sent, "message status 'sent'")
    r = await api.call("GET", f"/v1/inbox/{conv}", key=t.key)
    assert TS.match(r.body["data"]["messages"][0]["sentAt"]), r.body
    # the list shows both, newest activity first, without messages
    r = await api.call("GET", "/v1/inbox", key=t.key)
    assert r.status == 200 and {i["id"] for i in r.body["data"]} == {m["convId"] for m in msgs}
    assert all("messages" not in i for i in r.body["data"])
    r = await api.call("GET", "/v1/inbox", key=t.key, params={"q": "morgan"})
    assert [i["id"] for i in r.body["data"]] == [conv], r.body
    # PATCH returns the compact state
    r = await api.call("PATCH", f"/v1/inbox/{conv}", key=t.key, json_body={"tags": ["vip"], "aiTag": "hot"})
    assert r.status == 200, r.text()
    assert r.body == {"success": True, "data": {"id": conv, "aiTag": "hot", "tags": ["vip"],
                                                "isRead": True, "unreadCount": 0}}


async def test_reply_by_conv_id_threads_on_the_same_mailbox(api: Api, sink: SmtpSink) -> None:
    t = await make_tenant(api, sink, mailboxes=2)
    r = await send(api, t, {"to": "lead1@example.test", "subject": "Pricing", "text": "first"})
    assert r.status == 202, r.text()
    first = r.body["messages"][0]
    r = await send(api, t, {"to": "lead2@example.test", "subject": "Other", "text": "x"})
    assert r.status == 202, r.text()
    # rotation: the least used mailbox takes the second recipient
    assert r.body["messages"][0]["account"]["id"] != first["account"]["id"]
    r = await send(api, t, {"convId": first["convId"], "text": "following up"})
    assert r.status == 202, r.text()
    check_send_body(r.body, t)
    reply = r.body["messages"][0]
    assert reply["convId"] == first["convId"]
    assert reply["account"] == first["account"], "a reply leaves from the conversation's mailbox"
    assert reply["to"].lower() == "lead1@example.test"
    r = await send(api, t, {"convId": first["convId"], "text": "one more"})
    assert r.status == 202, r.text()
    reply2 = r.body["messages"][0]
    received = await sink.wait_for(4, timeout=WAIT)
    by_id = {str(m.message["Message-ID"]).strip(): m for m in received}
    m1, m2 = by_id[reply["id"]], by_id[reply2["id"]]
    assert m1.message["Subject"] == "Re: Pricing"
    assert m2.message["Subject"] == "Re: Pricing", "never Re: Re:"
    assert str(m1.message["In-Reply-To"]).strip() == first["id"]
    assert first["id"] in str(m1.message["References"])
    assert str(m2.message["In-Reply-To"]).strip() in (reply["id"], first["id"])
    assert first["id"] in str(m2.message["References"])
    assert m1.rcpt_tos == ["lead1@example.test"]
    # a subject that already starts with "Re: " gets no second prefix
    r = await send(api, t, {"to": "lead3@example.test", "subject": "Re: Hello", "text": "x"})
    assert r.status == 202, r.text()
    r = await send(api, t, {"convId": r.body["messages"][0]["convId"], "text": "y"})
    assert r.status == 202, r.text()
    rid = r.body["messages"][0]["id"]
    received = await sink.wait_for(6, timeout=WAIT)
    [m3] = [m for m in received if str(m.message["Message-ID"]).strip() == rid]
    assert m3.message["Subject"] == "Re: Hello"
    assert first["account"]["email"] in str(m1.message["From"])
    r = await api.call("GET", f"/v1/inbox/{first['convId']}", key=t.key)
    assert [m["messageId"] for m in r.body["data"]["messages"]] == [first["id"], reply["id"], reply2["id"]]
    # convId with to or subject: 400 naming the field; unknown convId: 404
    r = await send(api, t, {"convId": first["convId"], "to": "x@example.test", "text": "a"})
    err = assert_error(r, 400)
    assert any(d["field"] == "to" for d in err.get("details", [])), err
    err = assert_error(await send(api, t, {"convId": first["convId"], "subject": "x", "text": "a"}), 400)
    assert any(d["field"] == "subject" for d in err.get("details", [])), err
    assert_error(await send(api, t, {"convId": "conv_0000000000000000", "text": "a"}), 404)
    # a conversation of another identity of the same workspace: 404
    await create_identity(api, t, "bob@example.com", [t.mailboxes[0]["id"]])
    r = await api.call("POST", "/v1/identities/bob@example.com/send", key=t.key,
                       json_body={"convId": first["convId"], "text": "a"})
    assert_error(r, 404)


async def test_caps_suppression_and_no_mailbox_rejections(api: Api, sink: SmtpSink) -> None:
    t = await make_tenant(api, sink, identity_cap=2)
    r = await api.call("POST", "/v1/suppressions", key=t.key,
                       json_body={"email": "gone@EXAMPLE.test", "reason": "manual"})
    assert r.status == 201, r.text()
    r = await send(api, t, {"to": ["gone@example.test", "ok@example.test"], "subject": "s", "text": "t"})
    assert r.status == 202, r.text()
    check_send_body(r.body, t)
    assert (r.body["accepted"], r.body["rejected"]) == (1, 1)
    rej = next(m for m in r.body["messages"] if m["status"] == "rejected")
    assert rej["reason"] == "suppressed" and rej["to"].lower() == "gone@example.test"
    assert (r.body["remaining"], r.body["dailyCap"]) == (1, 2), "caps count accepted recipients only"
    r = await send(api, t, {"to": "gone@example.test", "subject": "s", "text": "t"})
    assert r.status == 429, r.text()
    check_send_body(r.body, t)
    assert r.body["accepted"] == 0 and r.body["messages"][0]["reason"] == "suppressed"
    r = await send(api, t, {"to": ["a@example.test", "b@example.test"], "subject": "s", "text": "t"})
    assert r.status == 202, r.text()
    assert (r.body["accepted"], r.body["rejected"], r.body["remaining"]) == (1, 1, 0), r.body
    assert [m.get("reason") for m in r.body["messages"] if m["status"] == "rejected"] == ["cap_exceeded"]
    r = await send(api, t, {"to": "c@example.test", "subject": "s", "text": "t"})
    assert r.status == 429, r.text()
    check_send_body(r.body, t)
    assert r.body["messages"][0]["reason"] == "cap_exceeded" and r.body["remaining"] == 0
    # an identity whose pool has no mailbox
    await create_identity(api, t, "empty@example.com", [])
    r = await api.call("POST", "/v1/identities/empty@example.com/send", key=t.key,
                       json_body={"to": "d@example.test", "subject": "s", "text": "t"})
    assert r.status == 429, r.text()
    assert r.body["messages"][0]["status"] == "rejected"
    assert r.body["messages"][0]["reason"] == "no_mailbox"


async def test_mailbox_cap_exhausted_is_cap_exceeded(api: Api, sink: SmtpSink) -> None:
    t = await make_tenant(api, sink, identity_cap=100, mailbox_cap=1)
    r = await send(api, t, {"to": ["a@example.test", "b@example.test"], "subject": "s", "text": "t"})
    assert r.status == 202, r.text()
    assert [m["status"] for m in r.body["messages"]] == ["accepted", "rejected"]
    assert r.body["messages"][1]["reason"] == "cap_exceeded"


async def test_idempotency_key_replay_and_conflict(api: Api, tenant: Tenant, sink: SmtpSink) -> None:
    body = {"to": "lead@example.test", "subject": "Once", "text": "only once"}
    key = f"order-{secrets.token_hex(8)}"
    r1 = await send(api, tenant, body, headers={"Idempotency-Key": key})
    assert r1.status == 202, r1.text()
    assert r1.headers.get("Idempotent-Replayed") in (None, "false")
    r2 = await send(api, tenant, body, headers={"Idempotency-Key": key})
    assert r2.status == 202, r2.text()
    assert r2.headers.get("Idempotent-Replayed") == "true"
    assert r2.body == r1.body
    assert_error(await send(api, tenant, body | {"text": "changed"}, headers={"Idempotency-Key": key}), 409)
    # one conversation and one delivered message, not two
    await sink.wait_for(1, timeout=WAIT)
    r = await api.call("GET", "/v1/inbox", key=tenant.key)
    assert len(r.body["data"]) == 1, r.body
    assert tenant.identity["dailyCap"] - r2.body["remaining"] == 1
    # bad keys: empty, too long, non-printable
    for bad in ("x" * 256, "tab\there"):
        assert_error(await send(api, tenant, body, headers={"Idempotency-Key": bad}), 400)


async def test_custom_headers_rules(api: Api, tenant: Tenant, sink: SmtpSink) -> None:
    base = {"to": "lead@example.test", "subject": "s", "text": "t"}
    for name in ("From", "subject", "Message-ID", "In-Reply-To", "References", "Date", "MIME-Version",
                 "Content-Type", "To", "Cc", "Bcc"):
        err = assert_error(await send(api, tenant, base | {"headers": {name: "x"}}), 400)
        assert err.get("details"), err
    assert_error(await send(api, tenant, base | {"headers": {"X-Campaign": "a\r\nBcc: evil@example.test"}}),
                 400)
    assert_error(await send(api, tenant, base | {"headers": {"X-Campaign": "a\nb"}}), 400)
    r = await send(api, tenant, base | {"headers": {"X-Campaign": "spring",
                                                    "List-Unsubscribe": "<mailto:u@example.test>"}})
    assert r.status == 202, r.text()
    [got] = await sink.wait_for(1, timeout=WAIT)
    assert got.message["X-Campaign"] == "spring"
    assert got.message["List-Unsubscribe"] == "<mailto:u@example.test>"


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


# -- events through webhooks ------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    got: asyncio.Queue[tuple[dict[str, str], bytes]]
    fail_next: list[int]  # [n]: answer the next n POSTs with 500 and a 4 KiB body


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    got: asyncio.Queue[tuple[dict[str, str], bytes]] = asyncio.Queue()

    fail_next = [0]

    async def hook(request: web.Request) -> web.Response:
        got.put_nowait((dict(request.headers), await request.read()))
        if fail_next[0] > 0:
            fail_next[0] -= 1
            return web.Response(status=500, text="x" * 4096)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Receiver(f"http://127.0.0.1:{port}/hook", got, fail_next)
    finally:
        await runner.cleanup()


def verify_signature(secret: str, headers: dict[str, str], raw: bytes) -> None:
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, sig = lower["webhook-id"], lower["webhook-timestamp"], lower["webhook-signature"]
    assert abs(int(ts) - time.time()) < 300, ts
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + raw, hashlib.sha256).digest())
    given = [s.split(",", 1)[1] for s in sig.split() if s.startswith("v1,")]
    assert expected.decode() in given, (sig, expected)


async def next_event(rx: Receiver, etype: str) -> tuple[dict[str, str], bytes, dict[str, Any]]:
    async with asyncio.timeout(WAIT):
        while True:
            headers, raw = await rx.got.get()
            event = json.loads(raw)
            if event.get("type") == etype:
                return headers, raw, event


async def test_email_sent_webhook_signed_standard_webhooks(
    api: Api, tenant: Tenant, receiver: Receiver
) -> None:
    assert_error(await api.call("POST", "/v1/webhooks", key=tenant.key,
                                json_body={"url": receiver.url, "events": ["email.nonsense"]}), 400)
    r = await api.call("POST", "/v1/webhooks", key=tenant.key,
                       json_body={"url": receiver.url, "events": ["email.sent"], "description": "ci"})
    assert r.status == 201, r.text()
    hook = r.body["data"]
    assert hook["id"].startswith("whk_") and hook["secret"].startswith("whsec_")
    r = await api.call("GET", f"/v1/webhooks/{hook['id']}", key=tenant.key)
    assert r.status == 200 and "secret" not in r.body["data"], "the secret is shown once"
    r = await send(api, tenant, {"to": "lead@example.test", "subject": "Evented", "text": "x",
                                 "metadata": {"crmId": "42", "step": 2}})
    assert r.status == 202, r.text()
    m = r.body["messages"][0]
    headers, raw, event = await next_event(receiver, "email.sent")
    verify_signature(hook["secret"], headers, raw)
    lower = {k.lower(): v for k, v in headers.items()}
    assert lower["webhook-id"] == event["id"] and event["id"].startswith("evt_")
    assert set(event) == {"id", "type", "createdAt", "workspaceId", "data"}, event
    assert TS.match(event["createdAt"]) and event["workspaceId"] == tenant.workspace_id
    d = event["data"]
    assert d["conversationId"] == m["convId"] and d["identity"] == tenant.handle
    assert d["mailbox"] == m["account"]
    assert d["messageId"].startswith("msg_") and d["rfcMessageId"] == m["id"]
    assert d["to"] == "lead@example.test" and isinstance(d["from"], str)
    assert tenant.mailboxes[0]["email"] in d["from"]
    assert d["subject"] == "Evented" and d["metadata"] == {"crmId": "42", "step": 2}
    assert TS.match(d["sentAt"]) and isinstance(d["smtpResponse"], str)
    # the delivery log records it; the test event is webhook.test
    async def recorded() -> dict[str, Any] | None:
        r = await api.call("GET", f"/v1/webhooks/{hook['id']}/deliveries", key=tenant.key)
        assert r.status == 200, r.text()
        rows: list[dict[str, Any]] = r.body["data"]
        return rows[0] if rows and rows[0]["status"] != "pending" else None

    row = await until(recorded, "the delivery attempt to be recorded")
    assert row["eventId"] == event["id"] and row["eventType"] == "email.sent" and row["attempt"] == 1
    assert row["status"] == "succeeded" and row["responseCode"] == 204
    assert row["id"] and TS.match(row["createdAt"]) and isinstance(row["durationMs"], int | float)
    assert row["nextAttemptAt"] is None
    r = await api.call("POST", f"/v1/webhooks/{hook['id']}/deliveries/{row['id']}/retry", key=tenant.key)
    assert r.status == 202, r.text()
    headers, raw, again = await next_event(receiver, "email.sent")
    assert again["id"] == event["id"], "a retried delivery carries the same event id"
    r = await api.call("PATCH", f"/v1/webhooks/{hook['id']}", key=tenant.key, json_body={"events": ["*"]})
    assert r.status == 200, r.text()
    r = await api.call("POST", f"/v1/webhooks/{hook['id']}/test", key=tenant.key)
    assert r.status == 202, r.text()
    eid = r.body["data"]["eventId"] if "data" in r.body else r.body["eventId"]
    headers, raw, event = await next_event(receiver, "webhook.test")
    assert event["id"] == eid
    verify_signature(hook["secret"], headers, raw)
    r = await api.call("POST", f"/v1/webhooks/{hook['id']}/rotate-secret", key=tenant.key)
    assert r.status == 200, r.text()
    new = r.body["data"]["secret"] if "data" in r.body else r.body["secret"]
    assert new.startswith("whsec_") and new != hook["secret"]


async def test_webhook_private_url_allowed_by_config_and_bad_url_400(api: Api, tenant: Tenant) -> None:
    # MAILGW_WEBHOOKS_ALLOW_PRIVATE=true in this gateway: loopback is accepted
    r = await api.call("POST", "/v1/webhooks", key=tenant.key, json_body={"url": "http://127.0.0.1:9/x"})
    assert r.status == 201, r.text()
    err = assert_error(await api.call("POST", "/v1/webhooks", key=tenant.key,
                                      json_body={"url": "not a url"}), 400)
    assert any(d["field"] == "url" for d in err.get("details", [])), err


# -- more of the send API: sendAt, unsubscribe, lead/campaign, attachments ---------------------


async def test_send_at_is_accepted_now_and_delivered_then(api: Api, tenant: Tenant, sink: SmtpSink) -> None:
    when = datetime.now(UTC) + timedelta(seconds=3)
    r = await send(api, tenant, {"to": "later@example.test", "subject": "Later", "text": "t",
                                 "sendAt": when.isoformat()})
    assert r.status == 202, r.text()
    check_send_body(r.body, tenant)
    assert r.body["remaining"] == tenant.identity["dailyCap"] - 1, "the cap is reserved at acceptance"
    [got] = await sink.wait_for(1, timeout=WAIT)
    assert datetime.now(UTC) >= when, "delivered before sendAt"
    assert str(got.message["Message-ID"]).strip() == r.body["messages"][0]["id"]


async def test_unsubscribe_one_click_suppresses_and_fires_event(
    api: Api, tenant: Tenant, sink: SmtpSink, gateway: Gateway, receiver: Receiver
) -> None:
    r = await api.call("POST", "/v1/webhooks", key=tenant.key,
                       json_body={"url": receiver.url, "events": ["lead.unsubscribed"]})
    assert r.status == 201, r.text()
    r = await send(api, tenant, {"to": "Leaver@Example.test", "subject": "News", "text": "t",
                                 "unsubscribe": True})
    assert r.status == 202, r.text()
    [got] = await sink.wait_for(1, timeout=WAIT)
    assert got.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    urls = re.findall(r"<(https?://[^>]+)>", str(got.message["List-Unsubscribe"]))
    assert urls and urls[0].startswith(gateway.base_url), got.message["List-Unsubscribe"]
    async with aiohttp.ClientSession() as s, s.post(
        urls[0], data="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ) as resp:
        assert resp.status < 300, (resp.status, await resp.text())
    r = await api.call("GET", "/v1/suppressions", key=tenant.key)
    rows = [x for x in r.body["data"] if x["email"].lower() == "leaver@example.test"]
    assert rows and rows[0]["reason"] == "unsubscribed", r.body
    r = await send(api, tenant, {"to": "leaver@example.test", "subject": "Again", "text": "t"})
    assert r.status == 429 and r.body["messages"][0]["reason"] == "suppressed", r.text()
    _, _, event = await next_event(receiver, "lead.unsubscribed")
    assert event["data"]["email"].lower() == "leaver@example.test", event
    assert event["workspaceId"] == tenant.workspace_id


async def test_lead_and_campaign_describe_the_conversation(api: Api, tenant: Tenant) -> None:
    r = await send(api, tenant, {
        "to": "morgan@northwind.example", "subject": "Hi", "html": "<p>Hello <b>Morgan</b></p>",
        "lead": {"firstName": "Morgan", "lastName": "Lee", "companyName": "Northwind", "jobTitle": "CTO"},
        "campaign": {"id": "cmp-42", "name": "Spring"},
    })
    assert r.status == 202, r.text()
    conv = r.body["messages"][0]["convId"]
    c = (await api.call("GET", f"/v1/inbox/{conv}", key=tenant.key)).body["data"]
    assert c["lead"]["firstName"] == "Morgan" and c["lead"]["companyName"] == "Northwind"
    assert c["lead"]["lastName"] == "Lee" and c["lead"]["jobTitle"] == "CTO"
    assert c["campaign"] == {"_id": "cmp-42", "name": "Spring"}
    assert "<b>Morgan</b>" in c["messages"][0]["body"], "body is the HTML when there is HTML"
    r = await api.call("GET", "/v1/inbox", key=tenant.key, params={"q": "Northwind"})
    assert [i["id"] for i in r.body["data"]] == [conv]


async def test_attachments_upload_limits_scope_and_send(api: Api, tenant: Tenant, sink: SmtpSink) -> None:
    form = aiohttp.FormData()
    form.add_field("file", b"%PDF-1.4 hello", filename="quote.pdf", content_type="application/pdf")
    r = await api.call("POST", "/v1/inbox/attachments/upload", key=tenant.key, data=form)
    assert r.status in (200, 201), r.text()
    up = r.body["data"]
    assert set(up) >= {"url", "key", "filename", "contentType", "size"}, up
    assert up["key"].startswith(f"inbox-attachments/{tenant.workspace_id}/"), up
    assert up["key"].endswith("/quote.pdf"), up
    assert up["filename"] == "quote.pdf" and up["size"] == len(b"%PDF-1.4 hello")
    big = aiohttp.FormData()
    big.add_field("file", b"x" * (MAX_ATTACHMENT_BYTES + 1), filename="big.bin")
    assert_error(await api.call("POST", "/v1/inbox/attachments/upload", key=tenant.key, data=big), 413)
    other = "inbox-attachments/ws_someoneelse000/abc/quote.pdf"
    body = {"to": "lead@example.test", "subject": "Quote", "text": "attached"}
    r = await send(api, tenant, body | {"attachments": [{"url": up["url"], "key": other}]})
    assert_error(r, 403)
    r = await send(api, tenant, body | {"attachments": [{"url": up["url"], "key": up["key"]}]})
    assert r.status == 202, r.text()
    [got] = await sink.wait_for(1, timeout=WAIT)
    files = [(p.get_filename(), p.get_content()) for p in got.message.iter_attachments()]
    assert ("quote.pdf", b"%PDF-1.4 hello") in files, files


async def test_bootstrap_is_once(gateway: Gateway) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(MAILGW), "bootstrap", "--json",
        env=gateway.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0
    assert "sk_user_" not in out.decode() and '"key"' not in out.decode(), out


async def test_caps_are_exact_under_concurrent_sends(api: Api, sink: SmtpSink) -> None:
    t = await make_tenant(api, sink, identity_cap=5, mailboxes=2)
    results = await asyncio.gather(*[
        send(api, t, {"to": f"c{i}@example.test", "subject": "s", "text": "t"}) for i in range(12)
    ])
    assert all(r.status in (202, 429) for r in results), [(r.status, r.text()) for r in results]
    accepted = sum(r.body["accepted"] for r in results)
    assert accepted == 5, [r.body for r in results]
    assert sorted(r.status for r in results) == [202] * 5 + [429] * 7


# -- AMQP: commands and events --------------------------------------------------------------


async def test_amqp_send_command_answers_like_http_and_events_are_published(
    api: Api, tenant: Tenant, gateway: Gateway
) -> None:
    import aio_pika

    prefix = gateway.env["MAILGW_AMQP_PREFIX"]
    conn = await aio_pika.connect(gateway.env["MAILGW_AMQP_URL"])
    try:
        ch = await conn.channel()
        events_q = await ch.declare_queue("", exclusive=True)
        await events_q.bind(f"{prefix}mailgw.events", routing_key="email.sent")
        replies = await ch.declare_queue("", exclusive=True)
        commands = await ch.get_exchange(f"{prefix}mailgw.commands", ensure=False)
        body = {"workspaceId": tenant.workspace_id, "identity": tenant.handle,
                "to": "amqp@example.test", "subject": "Via AMQP", "text": "hello"}
        corr = secrets.token_hex(8)
        await commands.publish(aio_pika.Message(
            json.dumps(body).encode(), content_type="application/json", message_id=f"amqp-{corr}",
            correlation_id=corr, reply_to=replies.name), routing_key="send")
        async with asyncio.timeout(WAIT):
            async with replies.iterator() as it:
                async for msg in it:
                    await msg.ack()
                    break
        assert msg.correlation_id == corr
        assert msg.content_type == "application/json"
        assert msg.headers.get("status") == 202, msg.headers
        result = json.loads(msg.body)
        check_send_body(result, tenant)
        assert result["accepted"] == 1
        async with asyncio.timeout(WAIT):
            async with events_q.iterator() as it:
                async for ev in it:
                    await ev.ack()
                    event = json.loads(ev.body)
                    if event["data"].get("rfcMessageId") == result["messages"][0]["id"]:
                        break
        assert ev.routing_key == "email.sent" and event["type"] == "email.sent"
        assert event["id"].startswith("evt_") and event["workspaceId"] == tenant.workspace_id
        # an invalid command is answered with the error shape, never dropped silently
        corr = secrets.token_hex(8)
        await commands.publish(aio_pika.Message(
            json.dumps({"workspaceId": tenant.workspace_id, "identity": tenant.handle, "to": 5}).encode(),
            content_type="application/json", message_id=f"bad-{corr}", correlation_id=corr,
            reply_to=replies.name), routing_key="send")
        async with asyncio.timeout(WAIT):
            async with replies.iterator() as it:
                async for msg in it:
                    await msg.ack()
                    break
        assert msg.correlation_id == corr and msg.headers.get("status") == 400, msg.headers
        err = json.loads(msg.body)
        assert err["code"] == 400 and err["error"] == "Bad Request" and err["message"], err
        # ... and dead-lettered (DESIGN: parked in mailgw.dead with the reason in headers)
        dead = await ch.get_queue(f"{prefix}mailgw.dead", ensure=False)

        async def parked() -> bool:
            held, found = [], False
            for _ in range(100):  # hold what we read (unacked) so each get returns the next one
                got = await dead.get(fail=False, no_ack=False)
                if got is None:
                    break
                if got.message_id == f"bad-{corr}":
                    await got.ack()
                    found = True
                    break
                held.append(got)
            for other in held:
                await other.nack(requeue=True)
            return found

        await until(parked, "the invalid command in mailgw.dead")
    finally:
        await conn.close()


# -- delivery outcomes, affinity, idempotency races, validation details -------------------------


async def test_smtp_5xx_is_email_failed_and_4xx_is_retried(
    api: Api, tenant: Tenant, sink: SmtpSink, receiver: Receiver
) -> None:
    r = await api.call("POST", "/v1/webhooks", key=tenant.key,
                       json_body={"url": receiver.url, "events": ["email.sent", "email.failed"]})
    assert r.status == 201, r.text()
    sink.fail_next(1)  # one 451, then accepted on the retry (MAILGW_SMTP_RETRY_SCHEDULE=1,2)
    r = await send(api, tenant, {"to": "retry@example.test", "subject": "Retry", "text": "t"})
    assert r.status == 202, r.text()
    [got] = await sink.wait_for(1, timeout=WAIT)
    assert str(got.message["Message-ID"]).strip() == r.body["messages"][0]["id"]
    _, _, sent = await next_event(receiver, "email.sent")
    assert sent["data"]["rfcMessageId"] == r.body["messages"][0]["id"]
    sink.reject_always(550, "5.1.1 no such user")
    r = await send(api, tenant, {"to": "nobody@example.test", "subject": "Bounce", "text": "t",
                                 "metadata": {"k": "v"}})
    assert r.status == 202, r.text()
    m = r.body["messages"][0]
    _, _, failed = await next_event(receiver, "email.failed")
    d = failed["data"]
    assert d["rfcMessageId"] == m["id"] and d["conversationId"] == m["convId"]
    assert d["smtpCode"] == 550 and "no such user" in d["smtpMessage"], d
    assert isinstance(d["attempts"], int) and d["attempts"] >= 1
    assert d["metadata"] == {"k": "v"} and d["to"] == "nobody@example.test"

    async def failed_status() -> dict[str, Any] | None:
        c = (await api.call("GET", f"/v1/inbox/{m['convId']}", key=tenant.key)).body["data"]
        msg: dict[str, Any] = c["messages"][0]
        return msg if msg["status"] == "failed" else None

    msg = await until(failed_status, "message status 'failed'")
    assert msg.get("error"), msg
    mbx = (await api.call("GET", f"/v1/mailboxes/{tenant.mailboxes[0]['id']}", key=tenant.key)).body["data"]
    assert mbx["health"]["sentToday"] >= 1, mbx


async def test_affinity_new_existing_reassigned(api: Api, sink: SmtpSink) -> None:
    t = await make_tenant(api, sink, mailboxes=2)
    r = await send(api, t, {"to": "pin@Example.TEST", "subject": "a", "text": "t"})
    assert r.status == 202, r.text()
    first = r.body["messages"][0]
    assert first["affinity"] == "new"
    r = await send(api, t, {"to": "pin@example.test", "subject": "b", "text": "t"})
    assert r.status == 202, r.text()
    second = r.body["messages"][0]
    assert second["affinity"] == "existing", "the domain part compares case-insensitively"
    assert second["account"] == first["account"]
    assert second["convId"] != first["convId"], "a new send is a new conversation"
    r = await api.call("PATCH", f"/v1/mailboxes/{first['account']['id']}", key=t.key,
                       json_body={"status": "paused"})
    assert r.status == 200, r.text()
    r = await send(api, t, {"to": "pin@example.test", "subject": "c", "text": "t"})
    assert r.status == 202, r.text()
    third = r.body["messages"][0]
    assert third["affinity"] == "reassigned" and third["account"]["id"] != first["account"]["id"]
    r = await send(api, t, {"to": "pin@example.test", "subject": "d", "text": "t"})
    assert r.body["messages"][0]["affinity"] == "existing"
    assert r.body["messages"][0]["account"] == third["account"], "the pin moved"


async def test_idempotency_key_concurrent_duplicates(api: Api, tenant: Tenant) -> None:
    body = {"to": "race@example.test", "subject": "Race", "text": "t"}
    key = f"race-{secrets.token_hex(6)}"
    results = await asyncio.gather(*[send(api, tenant, body, headers={"Idempotency-Key": key})
                                     for _ in range(5)])
    fresh = [r for r in results if r.status == 202 and r.headers.get("Idempotent-Replayed") != "true"]
    assert len(fresh) == 1, [(r.status, r.headers.get("Idempotent-Replayed"), r.text()) for r in results]
    for r in results:
        if r.status == 409:
            assert_error(r, 409)
        else:
            assert r.status == 202 and r.body == fresh[0].body, r.text()
    r = await api.call("GET", "/v1/inbox", key=tenant.key)
    assert len(r.body["data"]) == 1


async def test_validation_details_name_each_field(api: Api, tenant: Tenant) -> None:
    r = await api.call("POST", "/v1/mailboxes", key=tenant.key, json_body={
        "email": "not-an-address", "smtp": {"host": "h", "port": 0, "security": "ssl", "password": "p"},
        "dailyCap": -1})
    err = assert_error(r, 400)
    fields = {d["field"] for d in err.get("details", [])}
    assert {"email", "smtp.port", "smtp.security", "dailyCap"} <= fields, err
    err = assert_error(await api.call("POST", "/v1/identities", key=tenant.key,
                                      json_body={"handle": "x@example.com", "timezone": "Mars/Base"}), 400)
    assert any(d["field"] == "timezone" for d in err.get("details", [])), err
    err = assert_error(await api.call("POST", "/v1/suppressions", key=tenant.key,
                                      json_body={"email": "a@example.test", "reason": "because"}), 400)
    assert any(d["field"] == "reason" for d in err.get("details", [])), err
    long_local = "a" * 250 + "@example.test"
    err = assert_error(await send(api, tenant, {"to": long_local, "subject": "s", "text": "t"}), 400)
    assert any(d["field"] == "to" for d in err.get("details", [])), err
    r = await send(api, tenant, {"to": "kunde@bücher.example", "subject": "IDN", "text": "t"})
    assert r.status == 202, r.text()
    err = assert_error(await send(api, tenant, {"to": "a@example.test", "subject": "s"}), 400)
    assert err.get("details"), "text or html is required"
    assert_error(await api.call("DELETE", "/v1/suppressions/absent@example.test", key=tenant.key), 404)


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


async def test_threading_inputs_from_name_and_cc_bcc(api: Api, sink: SmtpSink) -> None:
    t = await create_workspace(api, "Threads")
    mbx = await create_mailbox(api, t, sink, "named@tryacme.example", from_name="Alice Chen")
    await create_identity(api, t, "alice@example.com", [mbx["id"]], display_name="Identity Name")
    r = await send(api, t, {"to": "lead@example.test", "subject": "Earlier thread", "text": "t",
                            "inReplyTo": "<orig-1@elsewhere.example>",
                            "references": ["<orig-0@elsewhere.example>", "<orig-1@elsewhere.example>"]})
    assert r.status == 202, r.text()
    first = r.body["messages"][0]
    [got] = await sink.wait_for(1, timeout=WAIT)
    assert str(got.message["In-Reply-To"]).strip() == "<orig-1@elsewhere.example>"
    refs = str(got.message["References"])
    assert "<orig-0@elsewhere.example>" in refs and "<orig-1@elsewhere.example>" in refs
    assert got.message["From"].addresses[0].display_name == "Alice Chen", "mailbox fromName wins"
    r = await api.call("POST", f"/v1/inbox/{first['convId']}/reply", key=t.key,
                       json_body={"body": "<p>see below</p>", "cc": ["cc@example.test"],
                                  "bcc": ["hidden@example.test"]})
    assert r.status == 202, r.text()
    received = await sink.wait_for(2, timeout=WAIT)
    rep = received[-1]
    assert {"lead@example.test", "cc@example.test", "hidden@example.test"} <= set(rep.rcpt_tos)
    assert "cc@example.test" in str(rep.message["Cc"])
    assert rep.message["Bcc"] is None and b"hidden@example.test" not in rep.raw
    plain = rep.message.get_body(("plain",))
    assert plain is not None and "see below" in plain.get_content(), "the text part is derived"
    assert str(rep.message["In-Reply-To"]).strip() == first["id"]


async def test_idempotency_scope_and_replayed_429(api: Api, sink: SmtpSink) -> None:
    t = await make_tenant(api, sink, identity_cap=1)
    mine = t.identity
    other = await create_identity(api, t, "second@example.com", [t.mailboxes[0]["id"]], daily_cap=10)
    t.identity = mine
    body = {"to": "x@example.test", "subject": "s", "text": "t"}
    assert (await send(api, t, body)).status == 202
    key = f"k-{secrets.token_hex(4)}"
    r1 = await send(api, t, body | {"to": "y@example.test"}, headers={"Idempotency-Key": key})
    assert r1.status == 429, r1.text()
    r2 = await send(api, t, body | {"to": "y@example.test"}, headers={"Idempotency-Key": key})
    assert r2.status == 429 and r2.body == r1.body, "the original status and body again"
    assert r2.headers.get("Idempotent-Replayed") == "true"
    # the same key under another identity is another request
    r3 = await api.call("POST", f"/v1/identities/{other['handle']}/send", key=t.key,
                        json_body=body | {"to": "y@example.test"}, headers={"Idempotency-Key": key})
    assert r3.status == 202 and r3.headers.get("Idempotent-Replayed") != "true", r3.text()
    err = assert_error(await send(api, t, body | {"metadata": {"nested": {"a": 1}}}), 400)
    assert any(d["field"].startswith("metadata") for d in err.get("details", [])), err


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


async def test_every_collection_takes_limit_and_defaults_to_50(api: Api, tenant: Tenant) -> None:
    await asyncio.gather(*[
        api.call("POST", "/v1/suppressions", key=tenant.key, json_body={"email": f"s{i}@example.test"})
        for i in range(51)
    ])
    r = await api.call("GET", "/v1/suppressions", key=tenant.key)
    assert r.status == 200 and len(r.body["data"]) == 50 and isinstance(r.body["nextCursor"], str), r.body
    r2 = await api.call("GET", "/v1/suppressions", key=tenant.key, params={"cursor": r.body["nextCursor"]})
    assert len(r2.body["data"]) == 1 and r2.body["nextCursor"] is None
    emails = {x["email"] for x in r.body["data"] + r2.body["data"]}
    assert len(emails) == 51
    r = await api.call("POST", "/v1/webhooks", key=tenant.key, json_body={"url": "http://127.0.0.1:9/x"})
    whk = r.body["data"]["id"]
    pk = tenant.platform_key
    r = await api.call("GET", f"/v1/workspaces/{tenant.workspace_id}/keys", key=pk)
    [k] = r.body["data"]
    assert k["prefix"] == tenant.key_prefix and TS.match(k["createdAt"]) and "key" not in k
    wrong = []
    for path, key in ((f"/v1/workspaces/{tenant.workspace_id}/keys", pk),
                      (f"/v1/webhooks/{whk}/deliveries", tenant.key)):
        r = await api.call("GET", path, key=key)
        assert r.status == 200 and set(r.body) == {"success", "data", "nextCursor"}, (path, r.text())
        for bad in ("0", "101", "x"):
            r = await api.call("GET", path, key=key, params={"limit": bad})
            if r.status != 400:
                wrong.append(f"GET {path}?limit={bad} -> {r.status}, expected 400")
            else:
                assert_error(r, 400)
    assert not wrong, wrong


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


async def test_setup_lifecycle_pool_handle_and_deleted_identity(
    api: Api, tenant: Tenant, sink: SmtpSink
) -> None:
    spare = await create_mailbox(api, tenant, sink, "spare@tryacme.example")
    ids = [m["id"] for m in tenant.mailboxes]
    r = await api.call("PATCH", f"/v1/identities/{tenant.handle}", key=tenant.key,
                       json_body={"mailboxIds": ids})
    assert r.status == 200 and r.body["data"]["mailboxIds"] == ids, r.text()
    r = await api.call("DELETE", f"/v1/mailboxes/{spare['id']}", key=tenant.key)
    assert r.status == 204
    r = await api.call("GET", f"/v1/identities/{tenant.handle}", key=tenant.key)
    assert r.body["data"]["mailboxIds"] == [ids[0]], "a deleted mailbox leaves every pool"
    old = tenant.handle
    r = await api.call("PATCH", f"/v1/identities/{old}", key=tenant.key,
                       json_body={"handle": "renamed@example.com"})
    assert r.status == 200 and r.body["data"]["handle"] == "renamed@example.com", r.text()
    body = {"to": "x@example.test", "subject": "s", "text": "t"}
    assert_error(await api.call("POST", f"/v1/identities/{old}/send", key=tenant.key, json_body=body), 404)
    r = await api.call("POST", "/v1/identities/renamed@example.com/send", key=tenant.key, json_body=body)
    assert r.status == 202 and r.body["identity"] == "renamed@example.com", r.text()
    assert_error(await api.call("POST", "/v1/identities", key=tenant.key,
                                json_body={"handle": "renamed@example.com"}), 409)
    r = await api.call("DELETE", "/v1/identities/renamed@example.com", key=tenant.key)
    assert r.status == 204 and r.raw == b""
    r = await api.call("POST", "/v1/identities/renamed@example.com/send", key=tenant.key, json_body=body)
    assert_error(r, 404)
    err = assert_error(await send(api, tenant, {"to": [], "subject": "s", "text": "t"}), 400)
    assert any(d["field"] == "to" for d in err.get("details", [])), err


async def test_failed_webhook_is_retried_with_the_same_id(
    api: Api, tenant: Tenant, receiver: Receiver
) -> None:
    r = await api.call("POST", "/v1/webhooks", key=tenant.key, json_body={"url": receiver.url})
    assert r.status == 201, r.text()
    hook = r.body["data"]
    assert hook["events"] == ["*"] and hook["enabled"] is True, hook
    receiver.fail_next[0] = 1
    r = await api.call("POST", f"/v1/webhooks/{hook['id']}/test", key=tenant.key)
    assert r.status == 202, r.text()
    h1, _, first = await next_event(receiver, "webhook.test")
    h2, raw, again = await next_event(receiver, "webhook.test")  # MAILGW_WEBHOOK_RETRY_SCHEDULE=1,2
    assert again["id"] == first["id"]
    ids = [{k.lower(): v for k, v in h.items()}["webhook-id"] for h in (h1, h2)]
    assert ids[0] == ids[1] == first["id"], "webhook-id is stable across retries"
    verify_signature(hook["secret"], h2, raw)

    async def both() -> list[dict[str, Any]] | None:
        r = await api.call("GET", f"/v1/webhooks/{hook['id']}/deliveries", key=tenant.key)
        rows: list[dict[str, Any]] = r.body["data"]
        done = [x for x in rows if x["status"] != "pending"]
        return rows if len(done) >= 2 else None

    rows = await until(both, "two recorded attempts")
    newest, oldest = rows[0], rows[-1]
    assert (oldest["attempt"], oldest["status"], oldest["responseCode"]) == (1, "failed", 500), oldest
    assert (newest["attempt"], newest["status"], newest["responseCode"]) == (2, "succeeded", 204), newest
    assert len(oldest["responseSnippet"].encode()) <= 1024, "responseSnippet is at most 1 KiB"
    r = await api.call("PATCH", f"/v1/webhooks/{hook['id']}", key=tenant.key, json_body={"enabled": False})
    assert r.status == 200 and r.body["data"]["enabled"] is False, r.text()
