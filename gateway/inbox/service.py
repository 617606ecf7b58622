"""Inbox services: read, update, reply (now or scheduled), cancel. HTTP and AMQP share them.

Every write follows docs/contracts.md: the message row and its deliver task are staged in one
transaction; after commit the task is published (the scheduler relays it if that fails).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
import orjson

from gateway import outbox
from gateway.bus.publisher import Publisher
from gateway.bus.topology import DELIVER_KEY, DELIVERY
from gateway.config import Settings
from gateway.db import inbox as db
from gateway.db import usage
from gateway.errors import BadRequest, Conflict, NotFound
from gateway.ids import new_id
from gateway.inbox import attachments as att
from gateway.inbox import views
from gateway.inbox.models import AttachmentRef, ConversationPatch, ReplyRequest
from gateway.logging import get_logger
from gateway.mail.text import derive_parts, looks_like_html
from gateway.mail.threading import new_message_id, references_for_reply, reply_subject
from gateway.storage import DirectoryStorage, Storage
from gateway.timefmt import iso, now

log = get_logger(__name__)



@dataclass
class Deps:
    """What the services need; built from the API context or a consumer's context."""

    settings: Settings
    pool: asyncpg.Pool
    publisher: Publisher
    storage: Storage

    @classmethod
    def of(cls, ctx: Any) -> Deps:
        storage = getattr(ctx, "storage", None) or DirectoryStorage(ctx.settings.attachments_path)
        return cls(ctx.settings, ctx.pool, ctx.publisher, storage)


@asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection inside a transaction (typed as a Connection for the query modules)."""
    async with pool.acquire() as proxy, proxy.transaction():
        yield cast(asyncpg.Connection, proxy)


class ReplyNotPossible(Exception):
    """A scheduled reply that cannot be sent any more (recorded as `failed` with this text)."""


# --- read and update ---------------------------------------------------------------------

async def conversation(pool: asyncpg.Pool, workspace_id: str, conv_id: str) -> dict[str, Any]:
    async with pool.acquire() as proxy, proxy.transaction(isolation="repeatable_read", readonly=True):
        conn = cast(asyncpg.Connection, proxy)
        c = await db.get_conversation(conn, workspace_id, conv_id)
        if c is None:
            raise NotFound("Conversation not found")
        messages = await db.messages_of(conn, conv_id)
        files = await db.conversation_attachments(conn, conv_id)
        scheduled = await db.visible_scheduled_replies(conn, conv_id)
    return views.conversation_detail(c, messages, files, scheduled)


async def update(
    pool: asyncpg.Pool, workspace_id: str, conv_id: str, patch: ConversationPatch
) -> dict[str, Any]:
    given = patch.model_fields_set
    async with transaction(pool) as conn:
        c = await db.lock_conversation(conn, workspace_id, conv_id)
        if c is None:
            raise NotFound("Conversation not found")
        if "markRead" in given and patch.markRead is not None:
            if patch.markRead:
                await db.mark_all_read(conn, conv_id)
            else:
                await db.mark_newest_unread(conn, conv_id)
        changes: dict[str, Any] = {}
        if "aiTag" in given:
            changes["ai_tag"] = patch.aiTag
        if "tags" in given and patch.tags is not None:
            changes["tags"] = list(dict.fromkeys(patch.tags))
        if "status" in given and patch.status is not None:
            changes["status"] = patch.status
        await db.update_conversation(conn, conv_id, changes)
        unread = await db.sync_unread(conn, conv_id)
        row = await conn.fetchrow("SELECT ai_tag, tags FROM conversations WHERE id = $1", conv_id)
    assert row is not None
    return {"id": conv_id, "aiTag": row["ai_tag"], "tags": list(row["tags"]),
            "isRead": unread == 0, "unreadCount": unread}


# --- replies -------------------------------------------------------------------------------

async def reply(
    deps: Deps, workspace_id: str, conv_id: str, req: ReplyRequest, *, command_id: str | None = None
) -> dict[str, Any]:
    """`command_id` (an AMQP command's message_id) makes a redelivered command answer the same."""
    at = now()
    scheduled = req.scheduledFor is not None
    if req.scheduledFor is not None and req.scheduledFor <= at:
        raise BadRequest(details=[{"field": "scheduledFor", "message": "Must be in the future"}])
    payload = req.model_dump(mode="json", include={"body", "cc", "bcc", "attachments"})
    payload["isScheduled"] = scheduled
    if command_id is not None:
        payload["commandId"] = command_id
    outbox_ids: list[int] = []
    async with transaction(deps.pool) as conn:
        conv = await db.lock_conversation(conn, workspace_id, conv_id)
        if conv is None:
            raise NotFound("Conversation not found")
        if command_id is not None and (done := await db.reply_by_command(conn, conv_id, command_id)):
            return _reply_accepted(done)
        mailbox = await _reply_mailbox(conn, workspace_id, conv, req.mailboxId)
        uploads = await att.check_refs(conn, workspace_id, req.attachments)
        reply_id = new_id("rpl")
        row = await db.insert_scheduled_reply(
            conn, reply_id=reply_id, workspace_id=workspace_id, conv_id=conv_id,
            mailbox_id=mailbox["id"], payload=payload, scheduled_for=req.scheduledFor or at,
            status="pending" if scheduled else "sending",
        )
        if not scheduled:
            msg_id, outbox_id = await _reply_message(
                conn, deps.storage, conv, mailbox, reply_id, payload, uploads
            )
            await db.set_reply_state(conn, reply_id, "sending", message_id=msg_id)
            outbox_ids.append(outbox_id)
    await publish(deps, outbox_ids)
    return _reply_accepted(row)


def _reply_accepted(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": row["id"], "status": "pending", "scheduledFor": iso(row["scheduled_for"]),
            "isScheduled": bool(row["payload"].get("isScheduled"))}


async def cancel(pool: asyncpg.Pool, workspace_id: str, conv_id: str, reply_id: str) -> None:
    refused = await db.cancel_scheduled_reply(pool, workspace_id, conv_id, reply_id)
    if refused == "missing":
        raise NotFound("Scheduled reply not found")
    if refused is not None:
        raise Conflict("The scheduled reply is no longer pending and cannot be cancelled")


async def send_due_reply(deps: Deps) -> bool:
    """Turn one due scheduled reply into a message + deliver task. False when none is due."""
    outbox_ids: list[int] = []
    async with deps.pool.acquire() as proxy:
        conn = cast(asyncpg.Connection, proxy)
        async with conn.transaction():
            due = await db.claim_due_reply(conn)
            if due is None:
                return False
            try:
                async with conn.transaction():  # a savepoint: a failure keeps the claim
                    msg_id, outbox_id = await _materialize(conn, deps.storage, due)
                    await db.set_reply_state(conn, due["id"], "sending", message_id=msg_id)
                    outbox_ids.append(outbox_id)
            except (ReplyNotPossible, BadRequest, NotFound, FileNotFoundError) as exc:
                text = exc.message if isinstance(exc, BadRequest | NotFound) else str(exc)
                if isinstance(exc, FileNotFoundError):
                    text = "An attachment's file is missing from storage"
                if isinstance(exc, BadRequest) and exc.details:
                    text = "; ".join(f"{d['field']}: {d['message']}" for d in exc.details)
                log.warning("scheduled_reply_failed", reply_id=due["id"], error=text)
                await db.set_reply_state(conn, due["id"], "failed", error=text)
    await publish(deps, outbox_ids)
    return True


async def _materialize(
    conn: asyncpg.Connection, storage: Storage, due: asyncpg.Record
) -> tuple[str, int]:
    conv = await db.lock_conversation(conn, due["workspace_id"], due["conversation_id"])
    if conv is None:
        raise ReplyNotPossible("The conversation no longer exists")
    mailbox = await db.mailbox_in_workspace(conn, due["workspace_id"], due["mailbox_id"])
    if mailbox is None or mailbox["status"] != "active":
        raise ReplyNotPossible("The mailbox is no longer active")
    payload = due["payload"]
    refs = [AttachmentRef.model_validate(a) for a in payload.get("attachments", [])]
    uploads = await att.check_refs(conn, due["workspace_id"], refs)
    return await _reply_message(conn, storage, conv, mailbox, due["id"], payload, uploads)


async def named_mailbox(
    conn: asyncpg.Connection, workspace_id: str, mailbox_id: str, field: str
) -> asyncpg.Record:
    """The mailbox a request names in `field`: 404 unless it is the workspace's, 400 unless active."""
    mailbox = await db.mailbox_in_workspace(conn, workspace_id, mailbox_id)
    if mailbox is None:
        raise NotFound("Mailbox not found")
    if mailbox["status"] != "active":
        raise BadRequest(details=[{"field": field, "message": "Mailbox is not active"}])
    return mailbox


async def pool_mailbox(conn: asyncpg.Connection, identity_id: str, field: str) -> asyncpg.Record:
    """Any active mailbox of the identity's pool; 400 naming `field` when there is none."""
    fallback = await db.any_active_pool_mailbox(conn, identity_id)
    if fallback is None:
        raise BadRequest(details=[{"field": field, "message": "No active mailbox to send from"}])
    return fallback


async def _reply_mailbox(
    conn: asyncpg.Connection, workspace_id: str, conv: asyncpg.Record, mailbox_id: str | None
) -> asyncpg.Record:
    if mailbox_id is not None:
        return await named_mailbox(conn, workspace_id, mailbox_id, "mailboxId")
    if conv["mailbox_id"] is not None:
        mailbox = await db.mailbox_in_workspace(conn, workspace_id, conv["mailbox_id"])
        if mailbox is not None and mailbox["status"] == "active":
            return mailbox
        raise BadRequest(details=[{
            "field": "mailboxId",
            "message": "The conversation's mailbox is not active; choose one with mailboxId",
        }])
    return await pool_mailbox(conn, conv["identity_id"], "mailboxId")


def _body_parts(body: str) -> tuple[str, str]:
    return derive_parts(None, body) if looks_like_html(body) else derive_parts(body, None)


async def _reply_message(
    conn: asyncpg.Connection, storage: Storage, conv: asyncpg.Record, mailbox: asyncpg.Record,
    reply_id: str, payload: dict[str, Any], uploads: list[asyncpg.Record],
) -> tuple[str, int]:
    """The outbound `reply` message threaded onto the conversation, its files and its task."""
    parent = await db.newest_message(conn, conv["id"])
    in_reply_to, references = None, []
    if parent is not None:
        in_reply_to = parent["rfc_message_id"]
        references = references_for_reply(
            parent["rfc_message_id"], list(parent["references"]),
            [parent["in_reply_to"]] if parent["in_reply_to"] else None,
        )
    text, html = _body_parts(payload["body"])
    msg_id = new_id("msg")
    await db.insert_message(conn, {
        "id": msg_id, "conversation_id": conv["id"], "workspace_id": conv["workspace_id"],
        "mailbox_id": mailbox["id"], "type": "reply", "direction": "outbound",
        "rfc_message_id": new_message_id(mailbox["email"]),
        "in_reply_to": in_reply_to, "references": references,
        "from_email": mailbox["email"],
        "from_name": mailbox["from_name"] or conv["identity_display_name"],
        "to_emails": [conv["lead_email"]], "cc_emails": payload.get("cc", []),
        "bcc_emails": payload.get("bcc", []),
        "subject": reply_subject(conv["subject"]), "text_body": text, "html_body": html,
        "status": "queued", "scheduled_reply_id": reply_id, "read": True,
    })
    refs = [AttachmentRef.model_validate(a) for a in payload.get("attachments", [])]
    await att.bind_uploads(conn, storage, conv["workspace_id"], conv["id"], msg_id, refs, uploads)
    await usage.add(conn, mailbox["id"], usage.day_in(conv["timezone"]))
    await db.touch_activity(conn, conv["id"])
    return msg_id, await stage_deliver(conn, msg_id)


# --- deliver tasks -------------------------------------------------------------------------

async def stage_deliver(conn: asyncpg.Connection, msg_id: str) -> int:
    return await outbox.stage(
        conn, DELIVERY, DELIVER_KEY, orjson.dumps({"messageId": msg_id}), message_id=f"deliver:{msg_id}"
    )


async def publish(deps: Deps, outbox_ids: list[int]) -> None:
    """Publish after commit; on failure the committed row waits for the scheduler's relay."""
    if not outbox_ids:
        return
    try:
        await outbox.publish_rows(deps.pool, deps.publisher, outbox_ids)
    except Exception as exc:
        log.warning("deliver_publish_deferred", outbox_ids=outbox_ids, error=repr(exc))
