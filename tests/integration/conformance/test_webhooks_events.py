"""SPEC.md from the outside, events: signed webhooks with their delivery log and retries, AMQP
commands and events, delivery outcomes as events."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import pytest

from tests.integration.conformance.conftest import (
    Api,
    Gateway,
    Receiver,
    Tenant,
    assert_error,
)
from tests.integration.conformance.helpers import (
    TS,
    WAIT,
    check_send_body,
    next_event,
    send,
    until,
    verify_signature,
)
from tests.support.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration


# -- events through webhooks ------------------------------------------------------------------


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


# -- AMQP: commands and events ----------------------------------------------------------------


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


# -- delivery outcomes ------------------------------------------------------------------------


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
