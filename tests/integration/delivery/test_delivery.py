"""The delivery role against a real broker, database and an aiosmtpd sink on loopback."""

from __future__ import annotations

import re

import orjson
import pytest

from consumers.runner import Context
from gateway import events
from gateway.bus.topology import DELIVER_KEY, DELIVERY
from gateway.config import Settings
from gateway.delivery.worker import Deliverer
from gateway.ids import job_id, new_id
from tests.integration.delivery.conftest import running
from tests.integration.delivery.support import EventTap, message_row, stage_message, world
from tests.support.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration


def _deliverer(ctx: Context, settings: Settings | None = None) -> Deliverer:
    return Deliverer(settings or ctx.settings, ctx.pool, ctx.publisher, ctx.topology, ctx.vault)


async def test_sent_with_every_header(ctx: Context, sink: SmtpSink, tap: EventTap, worker: None) -> None:
    w = await world(ctx.pool, ctx.vault, port=sink.port)
    parent, root = "<parent.1@lead.example>", "<root.0@lead.example>"
    st = await stage_message(
        ctx.pool, ctx.publisher, w, text=None, html="<p>Hi <b>Bob</b></p>", in_reply_to=parent,
        references=[root, parent], headers={"X-Campaign": "spring"}, unsubscribe=True,
        metadata={"crm": "42"},
    )
    [ev] = await tap.wait("email.sent")
    [got] = sink.messages
    m = got.message
    assert got.mail_from == "alice@example.test" and got.rcpt_tos == ["bob@example.test"]
    assert m["Message-ID"] == st.rfc_message_id
    assert m["From"].addresses[0].display_name == "Alice Chen"
    assert m["From"].addresses[0].addr_spec == "alice@example.test"
    assert m["In-Reply-To"] == parent
    assert m["References"].split() == [root, parent]
    assert m["X-Campaign"] == "spring"
    assert m["Date"] is not None and "Auto-Submitted" not in m
    assert m.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in m.iter_parts()] == ["text/plain", "text/html"]
    assert "Hi Bob" in m.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    found = re.fullmatch(r"<http://127\.0\.0\.1:8025/v1/unsubscribe/([A-Za-z0-9_-]+)>",
                         str(m["List-Unsubscribe"]))
    assert found, m["List-Unsubscribe"]
    assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    tok = await ctx.pool.fetchrow("SELECT * FROM unsubscribe_tokens WHERE token = $1", found.group(1))
    assert tok["email"] == "bob@example.test" and tok["message_id"] == st.id

    row = await message_row(ctx.pool, st.id)
    assert row["status"] == "sent" and row["attempts"] == 1 and row["sending_until"] is None
    assert row["smtp_response"].startswith("250") and row["sent_at"] is not None
    data = ev["data"]
    assert ev["workspaceId"] == w.workspace_id and ev["id"].startswith("evt_")
    assert data["messageId"] == st.id and data["rfcMessageId"] == st.rfc_message_id
    assert data["conversationId"] == st.conversation_id and data["identity"] == w.handle
    assert data["mailbox"] == {"id": w.mailbox_id, "email": "alice@example.test"}
    assert data["to"] == "bob@example.test" and data["from"] == "alice@example.test"
    assert data["metadata"] == {"crm": "42"} and data["subject"] == "Hello there"
    assert data["smtpResponse"].startswith("250") and data["sentAt"].endswith("Z")
    async with ctx.pool.acquire() as conn:  # the fast path's data equals the shared helper's
        shared = await events.message_event_data(conn, st.id)  # type: ignore[arg-type]
    assert {k: v for k, v in data.items() if k not in ("sentAt", "smtpResponse")} == shared
    stored = await ctx.pool.fetchrow("SELECT type, data FROM events WHERE id = $1", ev["id"])
    assert stored["type"] == "email.sent" and stored["data"] == data
    mbx = await ctx.pool.fetchrow("SELECT sent_total, last_used_at FROM mailboxes WHERE id = $1",
                                  w.mailbox_id)
    assert mbx["sent_total"] == 1 and mbx["last_used_at"] is not None
    fresh = await ctx.pool.fetchval(
        "SELECT last_activity_at > now() - interval '1 minute' FROM conversations WHERE id = $1",
        st.conversation_id)
    assert fresh


async def test_4xx_is_retried_through_the_delay_queue(
    ctx: Context, sink: SmtpSink, tap: EventTap, worker: None
) -> None:
    w = await world(ctx.pool, ctx.vault, port=sink.port)
    sink.fail_next(1, 451, "4.3.0 try later")
    st = await stage_message(ctx.pool, ctx.publisher, w)
    await tap.wait("email.sent")
    row = await message_row(ctx.pool, st.id)
    assert row["status"] == "sent" and row["attempts"] == 2
    assert sink.data_attempts == 2 and len(sink.messages) == 1
    assert tap.of("email.failed") == []


async def test_drop_after_data_is_retried(ctx: Context, sink: SmtpSink, tap: EventTap, worker: None) -> None:
    w = await world(ctx.pool, ctx.vault, port=sink.port)
    sink.drop_after_data_next(1)
    st = await stage_message(ctx.pool, ctx.publisher, w)
    await tap.wait("email.sent")
    row = await message_row(ctx.pool, st.id)
    assert row["status"] == "sent" and row["attempts"] == 2 and len(sink.messages) == 1


@pytest.mark.parametrize("at", ["data", "rcpt"])
async def test_5xx_fails_at_once(
    ctx: Context, sink: SmtpSink, tap: EventTap, worker: None, at: str
) -> None:
    w = await world(ctx.pool, ctx.vault, port=sink.port)
    sink.reject_always(550, "5.1.1 no such user", at=at)  # type: ignore[arg-type]
    st = await stage_message(ctx.pool, ctx.publisher, w)
    [ev] = await tap.wait("email.failed")
    assert ev["data"]["smtpCode"] == 550 and "no such user" in ev["data"]["smtpMessage"]
    assert ev["data"]["attempts"] == 1 and ev["data"]["messageId"] == st.id
    row = await message_row(ctx.pool, st.id)
    assert (row["status"], row["smtp_code"], row["attempts"]) == ("failed", 550, 1)
    assert "no such user" in row["error"]
    health = await ctx.pool.fetchval("SELECT consecutive_failures FROM mailboxes WHERE id = $1",
                                     w.mailbox_id)
    assert health == 0  # the message's fault, not the mailbox's


async def test_retries_exhausted_fail(ctx: Context, sink: SmtpSink, tap: EventTap, worker: None) -> None:
    w = await world(ctx.pool, ctx.vault, port=sink.port)
    sink.fail_next(10, 452, "4.2.2 over quota")
    st = await stage_message(ctx.pool, ctx.publisher, w)
    [ev] = await tap.wait("email.failed", timeout=20)
    assert ev["data"]["attempts"] == 3 and ev["data"]["smtpCode"] == 452  # 1 + schedule [1, 2]
    row = await message_row(ctx.pool, st.id)
    assert row["status"] == "failed" and "retries exhausted" in row["error"]
    assert sink.data_attempts == 3 and sink.messages == []


async def test_redelivered_task_after_sent_does_not_send_again(
    ctx: Context, sink: SmtpSink, tap: EventTap, worker: None
) -> None:
    w = await world(ctx.pool, ctx.vault, port=sink.port)
    st = await stage_message(ctx.pool, ctx.publisher, w)
    await tap.wait("email.sent")
    # The same task again (a redelivery after a crash before the ack), through the broker…
    await ctx.publisher.publish(DELIVERY, DELIVER_KEY, orjson.dumps({"messageId": st.id}),
                                message_id=f"deliver:{st.id}")
    # …and handled directly, to observe the decision.
    d = _deliverer(ctx)
    try:
        assert (await d.deliver(st.id)).result == "skipped"
    finally:
        await d.close()
    second = await stage_message(ctx.pool, ctx.publisher, w)  # FIFO: behind the duplicate
    await tap.wait("email.sent", 2)
    assert [m.message["Message-ID"] for m in sink.messages] == [st.rfc_message_id, second.rfc_message_id]
    assert (await message_row(ctx.pool, st.id))["attempts"] == 1


async def test_expired_lease_is_sent_again_and_live_lease_deferred(
    ctx: Context, sink: SmtpSink, tap: EventTap
) -> None:
    """The crash window: a `sending` row whose worker died. Expired lease → resend."""
    w = await world(ctx.pool, ctx.vault, port=sink.port)
    expired = await stage_message(ctx.pool, None, w)
    live = await stage_message(ctx.pool, None, w)
    await ctx.pool.execute(
        "UPDATE messages SET status = 'sending', attempts = 1, sending_until = now() - interval '1 s'"
        " WHERE id = $1", expired.id)
    await ctx.pool.execute(
        "UPDATE messages SET status = 'sending', attempts = 1,"
        " sending_until = now() + interval '1.5 s' WHERE id = $1", live.id)
    d = _deliverer(ctx)
    try:
        assert (await d.deliver(expired.id)).result == "sent"
        assert (await d.deliver(live.id)).result == "deferred"
    finally:
        await d.close()
    row = await message_row(ctx.pool, expired.id)
    assert row["status"] == "sent" and row["attempts"] == 2
    async with running(ctx):  # the deferred task comes back from the delay queue after the lease
        await tap.wait("email.sent", 2)
    assert (await message_row(ctx.pool, live.id))["attempts"] == 2
    assert sorted(m.message["Message-ID"] for m in sink.messages) == sorted(
        [expired.rfc_message_id, live.rfc_message_id])


async def test_mailbox_unhealthy_then_recovered(ctx: Context, tap: EventTap, settings: Settings) -> None:
    async with SmtpSink(username="alice@example.test", password="right") as sink:
        w = await world(ctx.pool, ctx.vault, port=sink.port, password="wrong")
        strict = settings.model_copy(update={"mailbox_unhealthy_after": 3})
        async with running(ctx, strict):
            first = await stage_message(ctx.pool, ctx.publisher, w)
            [failed] = await tap.wait("email.failed", timeout=20)
            assert failed["data"]["messageId"] == first.id and failed["data"]["attempts"] == 3
            [sick] = await tap.wait("mailbox.unhealthy")
            assert sick["data"]["mailbox"]["id"] == w.mailbox_id and sick["data"]["reason"]
            mbx = await ctx.pool.fetchrow("SELECT * FROM mailboxes WHERE id = $1", w.mailbox_id)
            assert mbx["health"] == "unhealthy" and mbx["consecutive_failures"] == 3
            await ctx.pool.execute("UPDATE mailboxes SET smtp_password_enc = $2 WHERE id = $1",
                                   w.mailbox_id, ctx.vault.encrypt("right"))
            await stage_message(ctx.pool, ctx.publisher, w)
            await tap.wait("email.sent")
            [back] = await tap.wait("mailbox.recovered")
            assert back["data"]["mailbox"]["id"] == w.mailbox_id
        assert len(tap.of("mailbox.unhealthy")) == 1
        assert sink.logins == ["alice@example.test"]
        mbx = await ctx.pool.fetchrow("SELECT * FROM mailboxes WHERE id = $1", w.mailbox_id)
        assert mbx["health"] == "healthy" and mbx["consecutive_failures"] == 0


async def test_connections_are_reused(ctx: Context, sink: SmtpSink, tap: EventTap, worker: None) -> None:
    w = await world(ctx.pool, ctx.vault, port=sink.port)
    for _ in range(12):
        await stage_message(ctx.pool, ctx.publisher, w)
    await tap.wait("email.sent", 12)
    assert len(sink.messages) == 12
    assert sink.connections <= ctx.settings.smtp_connections_per_mailbox < 12


async def test_forward_job_and_scheduled_reply_are_finished(
    ctx: Context, sink: SmtpSink, tap: EventTap, worker: None
) -> None:
    w = await world(ctx.pool, ctx.vault, port=sink.port)
    jid = job_id("forward_email")
    await ctx.pool.execute(
        "INSERT INTO jobs (id, workspace_id, type, status, payload) VALUES ($1, $2, 'forward_email',"
        " 'pending', $3)", jid, w.workspace_id, {"toEmails": ["bob@example.test", "carol@example.test"]})
    fwd = await stage_message(ctx.pool, ctx.publisher, w, job_id=jid, cc=["carol@example.test"])
    [done] = await tap.wait("forward.completed")
    assert done["data"]["jobId"] == jid
    assert done["data"]["toEmails"] == ["bob@example.test", "carol@example.test"]
    job = await ctx.pool.fetchrow("SELECT status, result FROM jobs WHERE id = $1", jid)
    assert job["status"] == "completed" and job["result"] == {"messageId": fwd.rfc_message_id}

    conv = fwd.conversation_id
    rpl = new_id("rpl")
    await ctx.pool.execute(
        "INSERT INTO scheduled_replies (id, workspace_id, conversation_id, mailbox_id, payload,"
        " scheduled_for, status) VALUES ($1, $2, $3, $4, '{}', now(), 'sending')",
        rpl, w.workspace_id, conv, w.mailbox_id)
    sink.reject_always(554, "5.7.1 rejected")
    bad_job = job_id("forward_email")
    await ctx.pool.execute(
        "INSERT INTO jobs (id, workspace_id, type, status) VALUES ($1, $2, 'forward_email', 'pending')",
        bad_job, w.workspace_id)
    await stage_message(ctx.pool, ctx.publisher, w, scheduled_reply_id=rpl, conversation_id=conv)
    await stage_message(ctx.pool, ctx.publisher, w, job_id=bad_job)
    [failed] = await tap.wait("forward.failed")
    assert failed["data"]["jobId"] == bad_job and "rejected" in failed["data"]["error"]
    await tap.wait("email.failed", 2)
    reply = await ctx.pool.fetchrow("SELECT status, error FROM scheduled_replies WHERE id = $1", rpl)
    assert reply["status"] == "failed" and "rejected" in reply["error"]
    job = await ctx.pool.fetchrow("SELECT status, error FROM jobs WHERE id = $1", bad_job)
    assert job["status"] == "failed" and "rejected" in job["error"]
