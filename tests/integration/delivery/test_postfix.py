"""A real delivery: the delivery role → Postfix (127.0.0.1:2525) → Dovecot, read back over IMAP."""

from __future__ import annotations

import pytest

from consumers.runner import Context
from tests.integration.delivery.support import EventTap, message_row, stage_message, world
from tests.support.mailserver import SMTP_PORT, ensure_lab, imap_fetch_by_message_id

pytestmark = pytest.mark.integration


async def test_delivered_into_a_dovecot_inbox(ctx: Context, tap: EventTap, worker: None) -> None:
    ensure_lab()
    w = await world(ctx.pool, ctx.vault, port=SMTP_PORT, email="alice@example.test",
                    username="alice@example.test", password="secret")
    parent, root = "<p1.parent@lead.example>", "<p0.root@lead.example>"
    st = await stage_message(
        ctx.pool, ctx.publisher, w, to="bob@example.test", subject="Re: Lunch on Friday?",
        text="Friday works.\n\nAlice", html="<p>Friday <i>works</i>.</p><p>Alice</p>",
        from_name="Alice Chen", in_reply_to=parent, references=[root, parent], unsubscribe=True,
    )
    [ev] = await tap.wait("email.sent", timeout=30)
    assert ev["data"]["smtpResponse"].startswith("250")
    m = await imap_fetch_by_message_id("bob@example.test", st.rfc_message_id, timeout=30)
    assert m["Message-ID"] == st.rfc_message_id
    assert m["From"].addresses[0].display_name == "Alice Chen"
    assert m["Subject"] == "Re: Lunch on Friday?"
    assert m["In-Reply-To"] == parent and m["References"].split() == [root, parent]
    assert str(m["List-Unsubscribe"]).startswith("<http://127.0.0.1:8025/v1/unsubscribe/")
    assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "Auto-Submitted" not in m
    assert m.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in m.iter_parts()] == ["text/plain", "text/html"]
    assert (await message_row(ctx.pool, st.id))["status"] == "sent"
