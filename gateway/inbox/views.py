"""Rows → the inbox API's JSON shapes (SPEC "Inbox API"); pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from gateway.timefmt import iso

# Database rows (asyncpg records) or plain dicts of the same columns.
Row = Mapping[str, Any] | asyncpg.Record

# Internal delivery states a client never sees: all of them are still "queued" to it.
_PUBLIC_STATUS = {"scheduled": "queued", "queued": "queued", "sending": "queued",
                  "sent": "sent", "failed": "failed", "bounced": "bounced"}


def public_status(status: str | None) -> str | None:
    return _PUBLIC_STATUS.get(status or "", status)


def conversation_summary(c: Row) -> dict[str, Any]:
    lead = c["lead"] or {}
    unread = int(c["unread"])
    campaign = (
        {"_id": c["campaign_id"], "name": c["campaign_name"]}
        if c["campaign_id"] is not None or c["campaign_name"] is not None else None
    )
    return {
        "id": c["id"],
        "lead": {
            "_id": c["lead_id"],
            "email": c["lead_email"],
            "firstName": lead.get("firstName"),
            "lastName": lead.get("lastName"),
            "companyName": lead.get("companyName"),
            "jobTitle": lead.get("jobTitle"),
        },
        "campaign": campaign,
        "subject": c["subject"],
        "status": c["status"],
        "aiTag": c["ai_tag"],
        "tags": list(c["tags"]),
        "isRead": unread == 0,
        "unreadCount": unread,
        "identity": c["handle"],
        "mailbox": {"id": c["mailbox_id"], "email": c["mailbox_email"]} if c["mailbox_id"] else None,
        "lastActivityAt": iso(c["last_activity_at"]),
        "createdAt": iso(c["created_at"]),
        "updatedAt": iso(c["updated_at"]),
    }


def attachment_view(conv_id: str, n: int, a: Row) -> dict[str, Any]:
    return {
        "filename": a["filename"],
        "contentType": a["content_type"],
        "size": a["size"],
        "downloadUrl": f"/v1/inbox/{conv_id}/attachments/{n}",
    }


def message_view(m: Row, attachments: Sequence[dict[str, Any]]) -> dict[str, Any]:
    outbound = m["direction"] == "outbound"
    out: dict[str, Any] = {"id": m["id"], "type": m["type"], "messageId": m["rfc_message_id"]}
    if m["type"] == "sent":
        out.update({
            "subject": m["subject"],
            "body": m["html_body"] or m["text_body"] or "",
            "sentAt": iso(m["sent_at"]),
            "sequenceStep": m["sequence_step"],
            "opened": m["opened"],
            "clicked": m["clicked"],
        })
    else:
        if m["type"] == "manual":
            out["direction"] = m["direction"]
        out.update({
            "from": m["from_email"],
            "to": m["to_emails"][0] if m["to_emails"] else None,
            "cc": list(m["cc_emails"]),
            "subject": m["subject"],
            "content": m["text_body"] or "",
            "htmlContent": m["html_body"],
        })
        if outbound:
            out["sentAt"] = iso(m["sent_at"])
        else:
            out["receivedAt"] = iso(m["received_at"] or m["created_at"])
        if m["type"] == "reply":
            out.update({
                "isFromLead": m["is_from_lead"],
                "isAutoReply": m["is_auto_reply"],
                "read": m["read"],
            })
        out["attachments"] = list(attachments)
    if outbound:
        out["status"] = public_status(m["status"])
        out["error"] = m["error"] if m["status"] == "failed" else None
    out["createdAt"] = iso(m["created_at"])
    return out


def scheduled_reply_view(s: Row) -> dict[str, Any]:
    out: dict[str, Any] = {
        "_id": s["id"],
        "message": (s["payload"] or {}).get("body", ""),
        "scheduledFor": iso(s["scheduled_for"]),
        "status": s["status"],
        "mailboxId": s["mailbox_id"],
        "createdAt": iso(s["created_at"]),
    }
    if s["status"] == "failed":
        out["error"] = s["error"]
    return out


def conversation_detail(
    c: Row, messages: Sequence[Row], attachments: Sequence[Row], scheduled: Sequence[Row]
) -> dict[str, Any]:
    per_message: dict[str, list[dict[str, Any]]] = {}
    for n, a in enumerate(attachments):
        per_message.setdefault(a["message_id"], []).append(attachment_view(c["id"], n, a))
    out = conversation_summary(c)
    out["messages"] = [message_view(m, per_message.get(m["id"], [])) for m in messages]
    out["scheduledReplies"] = [scheduled_reply_view(s) for s in scheduled]
    return out


def job_view(j: Row) -> dict[str, Any]:
    return {
        "jobId": j["id"],
        "type": j["type"],
        "status": j["status"],
        "result": j["result"],
        "error": j["error"],
        "createdAt": iso(j["created_at"]),
        "updatedAt": iso(j["updated_at"]),
    }
