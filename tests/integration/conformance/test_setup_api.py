"""SPEC.md from the outside, the setup API: bootstrap, the identity and mailbox lifecycle,
validation details naming each field."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.conformance.conftest import (
    MAILGW,
    Api,
    Gateway,
    Tenant,
    assert_error,
    create_mailbox,
)
from tests.integration.conformance.helpers import (
    send,
)
from tests.support.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration


async def test_bootstrap_is_once(gateway: Gateway) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(MAILGW), "bootstrap", "--json",
        env=gateway.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0
    assert "sk_user_" not in out.decode() and '"key"' not in out.decode(), out


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
