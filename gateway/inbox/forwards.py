"""Forwards: the whole thread as a new email (note + Gmail-style chain, files again) run as a job."""

from __future__ import annotations

import zoneinfo
from typing import Any

import asyncpg

from gateway.db import inbox as db
from gateway.db import usage
from gateway.errors import NotFound
from gateway.ids import job_id, new_id
from gateway.inbox import attachments as att
from gateway.inbox.models import ForwardRequest
from gateway.inbox.service import (
    Deps,
    named_mailbox,
    pool_mailbox,
    publish,
    stage_deliver,
    transaction,
)
from gateway.mail.forward import ChainMessage, render_forward
from gateway.mail.threading import forward_subject, new_message_id

FORWARD_JOB = "forward_email"
FORWARD_QUEUED = "Forward queued. Poll worker /api/jobs/:jobId for status."


async def forward(
    deps: Deps, workspace_id: str, conv_id: str, req: ForwardRequest, *, command_id: str | None = None
) -> dict[str, Any]:
    async with transaction(deps.pool) as conn:
        conv = await db.lock_conversation(conn, workspace_id, conv_id)
        if conv is None:
            raise NotFound("Conversation not found")
        if command_id is not None and (done := await db.job_by_command(conn, conv_id, command_id)):
            return {"jobId": done, "status": "pending", "message": FORWARD_QUEUED}
        mailbox = await _forward_mailbox(conn, workspace_id, conv, req.fromMailboxId)
        uploads = await att.check_refs(conn, workspace_id, req.attachments)
        messages = [
            m for m in await db.messages_of(conn, conv_id)
            if m["job_id"] is None and m["status"] != "failed"
        ]
        chain = [_chain_message(m) for m in messages]
        text, html = render_forward(req.plainText, req.body, chain, tz=zoneinfo.ZoneInfo(conv["timezone"]))
        job, msg_id = job_id(FORWARD_JOB), new_id("msg")
        to, cc = req.toEmails[0], req.toEmails[1:]
        job_payload: dict[str, Any] = {"conversationId": conv_id, "messageId": msg_id,
                                       "toEmails": req.toEmails}
        if command_id is not None:
            job_payload["commandId"] = command_id
        await db.insert_job(conn, job, workspace_id, FORWARD_JOB, job_payload)
        await db.insert_message(conn, {
            "id": msg_id, "conversation_id": conv_id, "workspace_id": workspace_id,
            "mailbox_id": mailbox["id"], "type": "manual", "direction": "outbound",
            "rfc_message_id": new_message_id(mailbox["email"]),
            "from_email": mailbox["email"],
            "from_name": mailbox["from_name"] or conv["identity_display_name"],
            "to_emails": [to], "cc_emails": cc,
            "subject": forward_subject(conv["subject"]), "text_body": text, "html_body": html,
            "status": "queued", "job_id": job, "read": True,
        })
        position = await att.bind_uploads(conn, deps.storage, workspace_id, conv_id, msg_id,
                                          req.attachments, uploads)
        chain_ids = {m["id"] for m in messages}
        for earlier in await db.conversation_attachments(conn, conv_id):
            if earlier["message_id"] in chain_ids:
                await att.copy_attachment(conn, deps.storage, workspace_id, earlier, conv_id, msg_id,
                                          position)
                position += 1
        await usage.add(conn, mailbox["id"], usage.day_in(conv["timezone"]))
        await db.touch_activity(conn, conv_id)
        outbox_id = await stage_deliver(conn, msg_id)
    await publish(deps, [outbox_id])
    return {"jobId": job, "status": "pending", "message": FORWARD_QUEUED}


def _chain_message(m: asyncpg.Record) -> ChainMessage:
    return ChainMessage(
        from_addr=m["from_email"], from_name=m["from_name"], to=list(m["to_emails"]),
        cc=list(m["cc_emails"]), date=m["received_at"] or m["sent_at"] or m["created_at"],
        subject=m["subject"], text=m["text_body"], html=m["html_body"],
    )


async def _forward_mailbox(
    conn: asyncpg.Connection, workspace_id: str, conv: asyncpg.Record, mailbox_id: str | None
) -> asyncpg.Record:
    if mailbox_id is not None:
        return await named_mailbox(conn, workspace_id, mailbox_id, "fromMailboxId")
    last = await db.last_used_mailbox(conn, conv["id"])
    if last is not None:
        mailbox = await db.mailbox_in_workspace(conn, workspace_id, last)
        if mailbox is not None and mailbox["status"] == "active":
            return mailbox
    return await pool_mailbox(conn, conv["identity_id"], "fromMailboxId")
