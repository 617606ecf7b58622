"""SPEC.md from the outside, the send API's acceptance: one conversation per recipient, replies
by `convId`, caps and rejections, idempotency keys, recipient affinity."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from tests.integration.conformance.conftest import (
    Api,
    Tenant,
    assert_error,
    create_identity,
    make_tenant,
)
from tests.integration.conformance.helpers import (
    TS,
    WAIT,
    check_send_body,
    send,
    until,
)
from tests.support.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration


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


async def test_caps_are_exact_under_concurrent_sends(api: Api, sink: SmtpSink) -> None:
    t = await make_tenant(api, sink, identity_cap=5, mailboxes=2)
    results = await asyncio.gather(*[
        send(api, t, {"to": f"c{i}@example.test", "subject": "s", "text": "t"}) for i in range(12)
    ])
    assert all(r.status in (202, 429) for r in results), [(r.status, r.text()) for r in results]
    accepted = sum(r.body["accepted"] for r in results)
    assert accepted == 5, [r.body for r in results]
    assert sorted(r.status for r in results) == [202] * 5 + [429] * 7


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
