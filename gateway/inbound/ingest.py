"""Ingestion of one fetched batch: messages, events and the cursor commit in ONE transaction.

Order per message: classify (pure) → claim (mailbox, Message-ID) in `inbound_seen` → thread
→ persist reply / record bounce / quarantine. Then the folder cursor moves to the batch's last
UID, the transaction commits, and the staged outbox rows are published. A crash anywhere
before the commit loses the whole batch (fetched again); after it, the scheduler relays any
unpublished outbox row. Nothing is handled twice: `inbound_seen` is the exactly-once key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg

from gateway import events, outbox
from gateway.bus.publisher import Publisher
from gateway.db import inbound as db
from gateway.ids import new_id
from gateway.inbound.classify import Classified, Fetched, classify
from gateway.logging import get_logger
from gateway.mail.bounce import Bounce, BounceRecipient
from gateway.storage import Storage, new_key
from gateway.timefmt import iso

log = get_logger(__name__)

PUBLISH_LANES = 4
Fault = Callable[[str], None]  # tests inject crashes at named points ("persisted", "committed")


class LeaseLost(Exception):
    """This poller no longer owns the mailbox: the batch is rolled back, the watcher stops."""


@dataclass(frozen=True)
class MailboxRef:
    id: str
    workspace_id: str
    email: str


@dataclass
class BatchResult:
    last_uid: int
    outbox_ids: list[int] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


@dataclass
class Ingestor:
    """Everything ingestion needs; one per poller process (or test, or benchmark)."""

    pool: asyncpg.Pool
    storage: Storage
    public_url: str
    publisher: Publisher | None = None
    lease_owner: str | None = None  # when set, every batch is fenced by the mailbox lease
    fault: Fault | None = None

    async def ingest(
        self, mailbox: MailboxRef, folder: str, uidvalidity: int, items: list[Fetched], through_uid: int
    ) -> BatchResult:
        """Persist the batch and move the cursor to `through_uid`; publish after the commit."""
        classified = [(item, classify(item.raw)) for item in items]
        result = BatchResult(last_uid=through_uid)
        async with self.pool.acquire() as acquired, acquired.transaction():
            conn = cast(asyncpg.Connection, acquired)
            if self.lease_owner is not None and not await db.hold_lease(conn, mailbox.id, self.lease_owner):
                raise LeaseLost(mailbox.id)
            for item, c in classified:
                outcome = await self._one(conn, mailbox, folder, uidvalidity, item, c, result)
                result.count(outcome)
            if self.fault:
                self.fault("persisted")
            await db.set_cursor(conn, mailbox.id, folder, uidvalidity, through_uid)
        if self.fault:
            self.fault("committed")
        if self.publisher is not None and result.outbox_ids:
            try:
                # Confirms are awaited per row: publish a few rows at a time over the channel.
                ids = result.outbox_ids
                await asyncio.gather(*(outbox.publish_rows(self.pool, self.publisher, ids[i::PUBLISH_LANES])
                                       for i in range(min(PUBLISH_LANES, len(ids)))))
            except Exception as exc:  # committed: the scheduler's relay publishes them later
                log.warning("inbound_publish_deferred", mailbox=mailbox.id, error=repr(exc))
        return result

    async def _one(
        self,
        conn: asyncpg.Connection,
        mailbox: MailboxRef,
        folder: str,
        uidvalidity: int,
        item: Fetched,
        c: Classified,
        result: BatchResult,
    ) -> str:
        async def keep(reason: str, detail: str | None) -> str:
            if not await db.claim(conn, mailbox.id, c.rfc_message_id, "quarantined", None):
                return "duplicate"
            await db.quarantine(
                conn, mailbox_id=mailbox.id, folder=folder, uidvalidity=uidvalidity, uid=item.uid,
                rfc_message_id=c.rfc_message_id, reason=reason, raw=item.raw, detail=detail,
            )
            return reason

        if c.kind == "unparseable" or c.parsed is None:
            return await keep("unparseable", c.error)
        if c.kind == "bounce" and c.bounce is not None:
            return await self._bounce(conn, mailbox, c.bounce, c, keep, result)
        if await db.is_own_outbound(conn, mailbox.workspace_id, c.rfc_message_id):
            # A copy of mail the gateway sent (sent to itself, or a Sent folder): not a reply.
            await db.claim(conn, mailbox.id, c.rfc_message_id, "own", None)
            return "own"
        parsed = c.parsed
        refs = [*parsed.in_reply_to, *reversed(parsed.references)]
        conv = await db.thread_by_ids(conn, mailbox.workspace_id, mailbox.id, refs)
        if conv is None and parsed.from_addr:
            conv = await db.thread_by_lead(conn, mailbox.workspace_id, mailbox.id, parsed.from_addr)
        if conv is None:
            return await keep("unmatched", f"from {parsed.from_addr}")
        msg_id = new_id("msg")
        if not await db.claim(conn, mailbox.id, c.rfc_message_id, "reply", msg_id):
            return "duplicate"
        await self._reply(conn, mailbox, conv, msg_id, c, result)
        return "reply"

    async def _reply(
        self,
        conn: asyncpg.Connection,
        mailbox: MailboxRef,
        conv: asyncpg.Record,
        msg_id: str,
        c: Classified,
        result: BatchResult,
    ) -> None:
        parsed = c.parsed
        assert parsed is not None and parsed.from_addr is not None and c.received_at is not None
        from_lead = parsed.from_addr.lower() == str(conv["lead_email"]).lower()
        # Unread counts lead replies that want a human: auto-replies arrive already read.
        counts_unread = from_lead and not c.is_auto_reply
        inserted = await db.insert_reply(conn, {
            "id": msg_id,
            "conversation_id": conv["id"],
            "workspace_id": mailbox.workspace_id,
            "mailbox_id": mailbox.id,
            "type": "reply",
            "direction": "inbound",
            "rfc_message_id": c.rfc_message_id,
            "in_reply_to": parsed.in_reply_to[0] if parsed.in_reply_to else None,
            "references": parsed.references,
            "from_email": parsed.from_addr,
            "from_name": parsed.from_name,
            "to_emails": parsed.to,
            "cc_emails": parsed.cc,
            "subject": parsed.subject,
            "text_body": parsed.text,
            "html_body": parsed.html,
            "reply_text": c.reply_text,
            "metadata": conv["metadata"] or conv["conv_metadata"] or {},
            "is_from_lead": from_lead,
            "is_auto_reply": c.is_auto_reply,
            "read": c.is_auto_reply,
            "received_at": c.received_at,
        })
        if not inserted:  # already there under the unique index (belt and braces)
            return
        attachments = await self._attachments(conn, mailbox, conv["id"], msg_id, parsed.attachments)
        await db.touch_conversation(conn, conv["id"], 1 if counts_unread else 0, c.received_at)
        data = await events.message_event_data(conn, msg_id)
        data.update(
            content=parsed.text,
            replyText=c.reply_text,
            htmlContent=parsed.html,
            isAutoReply=c.is_auto_reply,
            receivedAt=iso(c.received_at),
            attachments=attachments,
        )
        _, oid = await events.stage(conn, "reply.received", mailbox.workspace_id, data)
        result.outbox_ids.append(oid)

    async def _attachments(
        self, conn: asyncpg.Connection, mailbox: MailboxRef, conv_id: str, msg_id: str, parts: list[Any]
    ) -> list[dict[str, Any]]:
        if not parts:
            return []
        first = await db.conversation_attachment_count(conn, conv_id)
        out: list[dict[str, Any]] = []
        for position, part in enumerate(parts):
            key = new_key(mailbox.workspace_id, part.filename)
            # Written before the commit: a crash leaves an orphan file, never a row without one.
            await self.storage.put(key, part.data)
            await db.insert_attachment(
                conn, workspace_id=mailbox.workspace_id, key=key, filename=part.filename,
                content_type=part.content_type, size=len(part.data), message_id=msg_id,
                conversation_id=conv_id, position=position,
            )
            out.append({
                "filename": part.filename,
                "contentType": part.content_type,
                "size": len(part.data),
                "downloadUrl": f"{self.public_url}/v1/inbox/{conv_id}/attachments/{first + position}",
            })
        return out

    async def _bounce(
        self,
        conn: asyncpg.Connection,
        mailbox: MailboxRef,
        bounce: Bounce,
        c: Classified,
        keep: Callable[[str, str | None], Any],
        result: BatchResult,
    ) -> str:
        targets: list[tuple[asyncpg.Record, BounceRecipient | None]] = []
        original = None
        if bounce.original_message_id:
            original = await db.sent_by_rfc_id(conn, mailbox.workspace_id, bounce.original_message_id)
        if original is not None:
            to = {str(t).lower() for t in original["to_emails"]}
            rcpt = next((r for r in bounce.recipients if r.email.lower() in to), None)
            targets.append((original, rcpt or (bounce.recipients[0] if bounce.recipients else None)))
        else:
            for r in bounce.recipients:
                sent = await db.latest_sent_to(conn, mailbox.id, r.email)
                if sent is not None:
                    targets.append((sent, r))
        if not targets:
            outcome: str = await keep("unmatched_bounce", f"original {bounce.original_message_id}")
            return outcome
        if not await db.claim(conn, mailbox.id, c.rfc_message_id, "bounce", targets[0][0]["id"]):
            return "duplicate"
        for sent, rcpt in targets:
            bounce_type = rcpt.bounce_type if rcpt else bounce.bounce_type
            diagnostic = rcpt.diagnostic if rcpt else None
            if bounce_type == "hard":
                await db.mark_bounced(conn, sent["id"], diagnostic)
                email = rcpt.email if rcpt else (sent["to_emails"][0] if sent["to_emails"] else None)
                if email:
                    await db.suppress_hard_bounce(conn, mailbox.workspace_id, email)
            data = await events.message_event_data(conn, sent["id"])
            data.update(bounceType=bounce_type, status=rcpt.status if rcpt else None, diagnostic=diagnostic)
            _, oid = await events.stage(conn, "email.bounced", mailbox.workspace_id, data)
            result.outbox_ids.append(oid)
        return "bounce"

