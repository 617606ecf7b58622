"""SPEC.md from the outside, who may call what: ops endpoints and OpenAPI, request ids,
API keys on both headers, platform vs workspace keys, other workspaces' resources as 404."""

from __future__ import annotations

import re
import secrets

import pytest

from tests.integration.conformance.conftest import (
    Api,
    Tenant,
    assert_error,
    make_tenant,
)
from tests.integration.conformance.helpers import (
    send,
)
from tests.support.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration


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
