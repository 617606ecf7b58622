"""Pure view functions: status mapping, per-type message fields, attachment numbering."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.inbox import views

T = datetime(2024, 6, 1, 15, 0, tzinfo=UTC)


def _msg(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "msg_1", "type": "reply", "direction": "inbound", "rfc_message_id": "<a@b>",
        "subject": "Re: Hi", "html_body": None, "text_body": "hello", "sent_at": None,
        "received_at": T, "created_at": T, "sequence_step": None, "opened": False, "clicked": False,
        "status": None, "error": None, "from_email": "lead@x.test", "to_emails": ["me@x.test"],
        "cc_emails": [], "is_from_lead": True, "is_auto_reply": False, "read": False,
    }
    return {**base, **over}


def test_public_status() -> None:
    states = ("scheduled", "queued", "sending", "sent", "failed", "bounced")
    assert [views.public_status(s) for s in states] == [
        "queued", "queued", "queued", "sent", "failed", "bounced"]


def test_inbound_reply_view() -> None:
    v = views.message_view(_msg(), [])
    assert v["receivedAt"] == "2024-06-01T15:00:00.000Z" and "sentAt" not in v
    assert v["from"] == "lead@x.test" and v["to"] == "me@x.test" and v["content"] == "hello"
    assert v["isFromLead"] is True and v["read"] is False and "status" not in v and "direction" not in v


def test_outbound_views() -> None:
    sent = views.message_view(_msg(type="sent", direction="outbound", html_body="<p>x</p>",
                                   sent_at=T, status="sending", sequence_step=2), [])
    assert sent["body"] == "<p>x</p>" and sent["status"] == "queued" and sent["sequenceStep"] == 2
    assert "attachments" not in sent
    manual = views.message_view(_msg(type="manual", direction="outbound", status="failed", error="550"), [])
    assert manual["direction"] == "outbound" and manual["status"] == "failed" and manual["error"] == "550"
    assert manual["sentAt"] is None and manual["attachments"] == []


def test_attachments_numbered_across_the_conversation() -> None:
    conv = {"id": "conv_1", "lead": {}, "lead_id": "l", "lead_email": "lead@x.test", "campaign_id": None,
            "campaign_name": None, "subject": "Hi", "status": "active", "ai_tag": None, "tags": [],
            "unread": 0, "handle": "h", "mailbox_id": None, "mailbox_email": None,
            "last_activity_at": T, "created_at": T, "updated_at": T}
    files = [{"message_id": m, "filename": f, "content_type": "text/plain", "size": 1}
             for m, f in (("msg_1", "a"), ("msg_2", "b"), ("msg_2", "c"))]
    out = views.conversation_detail(conv, [_msg(), _msg(id="msg_2")], files, [])
    urls = [[a["downloadUrl"] for a in m["attachments"]] for m in out["messages"]]
    assert urls == [["/v1/inbox/conv_1/attachments/0"],
                    ["/v1/inbox/conv_1/attachments/1", "/v1/inbox/conv_1/attachments/2"]]
    assert out["campaign"] is None and out["mailbox"] is None and out["isRead"] is True
