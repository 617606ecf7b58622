"""SPEC.md from the outside, the conventions every route shares: list envelopes, cursors and
limits, ids and timestamps, status codes, request bodies."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.integration.conformance.conftest import (
    MAX_BODY_BYTES,
    Api,
    Tenant,
    assert_error,
    create_mailbox,
)
from tests.integration.conformance.helpers import (
    TS,
    iso_in,
    send,
)
from tests.support.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration


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
