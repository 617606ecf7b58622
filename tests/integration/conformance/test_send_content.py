"""SPEC.md from the outside, what a send carries: custom headers, sendAt, one-click unsubscribe,
lead and campaign, attachments, threading inputs."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from tests.integration.conformance.conftest import (
    MAX_ATTACHMENT_BYTES,
    Api,
    Gateway,
    Receiver,
    Tenant,
    assert_error,
    create_identity,
    create_mailbox,
    create_workspace,
)
from tests.integration.conformance.helpers import (
    WAIT,
    check_send_body,
    next_event,
    send,
)
from tests.support.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration


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
