"""Ingestion of one fetched batch: messages, events and the cursor commit in ONE transaction.

Per message: classify (pure) → claim (mailbox, Message-ID) in `inbound_seen` → thread →
persist reply / record bounce / quarantine. The batch does this with a handful of statements
for all its messages: one look-up of the Message-IDs already handled, copies of our own mail and
the threading candidates by Message-ID (then, for mail none matches, one by lead address),
decided in memory in the batch's order (a message may thread onto one earlier in the same
batch), then one multi-row statement each for the claims, quarantined mail, replies and
attachments, and a last one for the conversation counters, the events with their outbox rows
and the folder cursor (moved to the batch's last UID). Then the transaction commits, and the
staged outbox rows are published in one write. A crash
anywhere before the commit loses the whole batch (fetched again); after it, the scheduler
relays any unpublished outbox row. Nothing is handled twice: `inbound_seen` is the
exactly-once key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import asyncpg
import orjson

from gateway import events
from gateway.bus.batch_publish import Outgoing, publish_many
from gateway.bus.publisher import Publisher
from gateway.bus.topology import EVENTS
from gateway.db import inbound_leases as leasedb
from gateway.db import inbound_lookups as lookups
from gateway.db import inbound_writes as writes
from gateway.ids import new_id
from gateway.inbound.classify import Classified, Fetched, classify
from gateway.logging import get_logger
from gateway.mail.bounce import Bounce, BounceRecipient
from gateway.mail.parse import ParsedAttachment
from gateway.storage import Storage, new_key
from gateway.timefmt import iso

log = get_logger(__name__)

Staged = tuple[int, dict[str, Any], bytes]  # (outbox id, event, serialized body) to publish
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


YIELD_AFTER = 0.0003  # seconds of classification before the event loop gets a turn


async def classify_items(items: list[Fetched]) -> list[Classified]:
    """`classify` each item, giving the event loop a turn every few hundred microseconds, so a
    batch can be classified while another one waits on the database or the IMAP server.

    Often enough that the batch being committed is not held up (its statements' answers wait
    for the loop), but not after every message: each turn is a poll of the sockets, which
    costs as much as a short message's classification."""
    out: list[Classified] = []
    clock = time.perf_counter
    due = clock() + YIELD_AFTER
    for item in items:
        out.append(classify(item.raw))
        if clock() >= due:
            await asyncio.sleep(0)
            due = clock() + YIELD_AFTER
    return out


@dataclass(frozen=True)
class _Conversation:
    """A conversation a message can be threaded onto, with the metadata the reply inherits."""

    id: str
    lead_email: str
    mailbox_id: str | None
    metadata: Any  # of the message answered (by Message-ID), else the conversation's
    conv_metadata: Any
    handle: str | None

    @classmethod
    def of(cls, row: Mapping[str, Any] | asyncpg.Record) -> _Conversation:
        return cls(row["id"], str(row["lead_email"]), row["mailbox_id"], row["metadata"],
                   row["conv_metadata"], row["handle"])


@dataclass
class _Reply:
    msg_id: str
    conv: _Conversation
    row: dict[str, Any]
    counts_unread: bool


@dataclass
class _Plan:
    """What one message of the batch becomes, decided before anything is written."""

    item: Fetched
    c: Classified
    outcome: str
    claim: tuple[str, str, str | None] | None = None  # (rfc_message_id, outcome, message_id)
    quarantine: writes.QuarantineRow | None = None
    reply: _Reply | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Threads:
    """Threading state of one batch: database candidates plus the batch's own replies."""

    mailbox_id: str
    by_id: dict[str, _Conversation]
    by_lead: dict[str, list[_Conversation]]
    activity: dict[str, datetime]  # conversation → last_activity_at, moved by this batch
    batch_ids: dict[str, _Conversation] = field(default_factory=dict)  # replies of this batch

    def find(self, refs: list[str], sender: str | None) -> _Conversation | None:
        """By referenced Message-IDs, then by sender as lead, as if each earlier message of the
        batch had already been written."""
        best: _Conversation | None = None
        best_key: tuple[bool, int] | None = None
        for pos, ref in enumerate(refs):
            # A reply of this batch is the newest message with its id: it wins the tie.
            for cand in (self.batch_ids.get(ref), self.by_id.get(ref)):
                if cand is None:
                    continue
                key = (cand.mailbox_id == self.mailbox_id, -pos)
                if best_key is None or key > best_key:
                    best, best_key = cand, key
        if best is not None or not sender:
            return best
        convs = self.by_lead.get(sender.lower(), [])
        if not convs:
            return None
        return max(convs, key=lambda cv: (cv.mailbox_id == self.mailbox_id, self.activity[cv.id]))

    def replied(self, rfc_message_id: str, reply: _Reply, at: datetime) -> None:
        conv = reply.conv
        self.batch_ids[rfc_message_id] = _Conversation(
            conv.id, conv.lead_email, conv.mailbox_id, reply.row["metadata"], conv.conv_metadata, conv.handle)
        if conv.id in self.activity:
            self.activity[conv.id] = max(self.activity[conv.id], at)


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
        self,
        mailbox: MailboxRef,
        folder: str,
        uidvalidity: int,
        items: list[Fetched],
        through_uid: int,
        classified: list[Classified] | None = None,
    ) -> BatchResult:
        """Persist the batch and move the cursor to `through_uid`; publish after the commit."""
        result, staged = await self.commit(mailbox, folder, uidvalidity, items, through_uid, classified)
        await self.publish(mailbox, staged)
        return result

    async def commit(
        self,
        mailbox: MailboxRef,
        folder: str,
        uidvalidity: int,
        items: list[Fetched],
        through_uid: int,
        classified: list[Classified] | None = None,
    ) -> tuple[BatchResult, list[Staged]]:
        """`ingest` without the publishing: returns the committed events for `publish`.

        `classified` (one per item, from `classify`) lets a caller classify ahead."""
        if classified is None or len(classified) != len(items):
            classified = [classify(item.raw) for item in items]
        result = BatchResult(last_uid=through_uid)
        staged: list[Staged] = []
        async with self.pool.acquire() as acquired, acquired.transaction():
            conn = cast(asyncpg.Connection, acquired)
            if self.lease_owner is not None and not await leasedb.hold_lease(
                conn, mailbox.id, self.lease_owner
            ):
                raise LeaseLost(mailbox.id)
            cursor = writes.CursorMove(mailbox.id, folder, uidvalidity, through_uid)
            if items:  # the batch's last statement also moves the cursor
                staged = await self._persist(conn, mailbox, cursor,
                                             list(zip(items, classified, strict=True)), result)
            else:
                await leasedb.set_cursor(conn, mailbox.id, folder, uidvalidity, through_uid)
            if self.fault:
                self.fault("persisted")
        if self.fault:
            self.fault("committed")
        return result, staged

    async def publish(self, mailbox: MailboxRef, staged: list[Staged]) -> None:
        """Publish committed events (never raises: what fails is left to the relay)."""
        if self.publisher is not None and staged:
            await self._publish(self.publisher, mailbox, staged)

    async def _publish(self, publisher: Publisher, mailbox: MailboxRef, staged: list[Staged]) -> None:
        """Publish the committed events in one write (confirms awaited together), then stamp
        the confirmed ones in one UPDATE; the rest are left to the scheduler's relay."""
        try:
            outcomes = await publish_many(
                publisher, EVENTS, [Outgoing(event["type"], body, event["id"]) for _, event, body in staged])
            done = [oid for (oid, _, _), out in zip(staged, outcomes, strict=True) if out is None]
            await writes.mark_published(self.pool, done)
            failed = [out for out in outcomes if isinstance(out, BaseException)]
            if failed:
                log.warning("inbound_publish_deferred", mailbox=mailbox.id, failed=len(failed),
                            error=repr(failed[0]))
        except Exception as exc:  # committed: the scheduler's relay publishes them later
            log.warning("inbound_publish_deferred", mailbox=mailbox.id, error=repr(exc))

    async def _persist(
        self,
        conn: asyncpg.Connection,
        mailbox: MailboxRef,
        cursor: writes.CursorMove,
        batch: list[tuple[Fetched, Classified]],
        result: BatchResult,
    ) -> list[Staged]:
        """Every message's outcome and rows, and the cursor moved; returns the staged
        (outbox id, event, body)."""
        mails = [c for _, c in batch if c.kind == "mail" and c.parsed is not None]
        refs: set[str] = set()
        for c in mails:  # every mail's references: a superset of what threading looks up
            assert c.parsed is not None
            refs.update(c.parsed.in_reply_to)
            refs.update(c.parsed.references)
        found = await lookups.batch_lookups(
            conn, mailbox.id, mailbox.workspace_id, sorted({c.rfc_message_id for _, c in batch}),
            sorted({c.rfc_message_id for c in mails}), sorted(refs))
        mailbox_email, seen, own = found.mailbox_email, found.seen, found.own
        threads = await self._threads(conn, mailbox, found.by_id, [
            c for c in mails if c.rfc_message_id not in own and c.rfc_message_id not in seen])
        plans: list[_Plan] = []
        for item, c in batch:
            plans.append(await self._plan(conn, mailbox, mailbox_email, item, c, seen, own, threads))

        claimed = await writes.claim_many(conn, mailbox.id, [p.claim for p in plans if p.claim is not None])
        for p in plans:
            if p.claim is not None and p.claim[0] not in claimed and p.outcome != "own":
                p.outcome, p.quarantine, p.reply = "duplicate", None, None  # lost a race: no writes
        await writes.quarantine_many(conn, mailbox_id=mailbox.id, folder=cursor.folder,
                                     uidvalidity=cursor.uidvalidity,
                                     rows=[p.quarantine for p in plans if p.quarantine is not None])
        replies = [p for p in plans if p.reply is not None]
        inserted = await writes.insert_replies(conn, [p.reply.row for p in replies if p.reply is not None])
        touched = await self._reply_rows(conn, mailbox, mailbox_email, [
            p for p in replies if p.reply is not None and p.reply.msg_id in inserted])
        evs = [e for p in plans for e in p.events]
        bodies = [orjson.dumps(e) for e in evs]
        oids = await writes.finish_batch(conn, touched=touched, exchange=EVENTS,
                                         workspace_id=mailbox.workspace_id, events=evs, bodies=bodies,
                                         cursor=cursor)
        for p in plans:
            result.count(p.outcome)
        result.outbox_ids.extend(oids)
        return list(zip(oids, evs, bodies, strict=True))

    async def _threads(
        self, conn: asyncpg.Connection, mailbox: MailboxRef, by_id: dict[str, Mapping[str, Any]],
        mails: list[Classified],
    ) -> _Threads:
        """The batch's threading state from the candidates by Message-ID (`by_id`, looked up
        for every mail's references) and, for mails none of them matches, by sender."""
        # Senders that no Message-ID matches in the database (a reply of this batch may still
        # match them by id later: the candidates are a superset).
        senders = [c.parsed.from_addr for c in mails if c.parsed is not None and c.parsed.from_addr
                   and not any(r in by_id for r in [*c.parsed.in_reply_to, *c.parsed.references])]
        by_lead: dict[str, list[_Conversation]] = {}
        activity: dict[str, datetime] = {}
        for row in await lookups.thread_candidates_by_lead(conn, mailbox.workspace_id, mailbox.id, senders):
            by_lead.setdefault(row["lead_key"], []).append(_Conversation.of(row))
            activity[row["id"]] = row["last_activity_at"]
        return _Threads(mailbox.id, {k: _Conversation.of(r) for k, r in by_id.items()}, by_lead, activity)

    async def _plan(
        self,
        conn: asyncpg.Connection,
        mailbox: MailboxRef,
        mailbox_email: str | None,
        item: Fetched,
        c: Classified,
        seen: set[str],
        own: set[str],
        threads: _Threads,
    ) -> _Plan:
        """One message's outcome, in the order the checks always ran; `seen` grows with the
        batch's claims, so a Message-ID twice in one batch is handled once."""
        rfc = c.rfc_message_id

        def keep(reason: str, detail: str | None) -> _Plan:
            if rfc in seen:
                return _Plan(item, c, "duplicate")
            seen.add(rfc)
            return _Plan(item, c, reason, claim=(rfc, "quarantined", None),
                         quarantine=writes.QuarantineRow(item.uid, rfc, reason, item.raw, detail))

        if c.kind == "unparseable" or c.parsed is None:
            return keep("unparseable", c.error)
        if c.kind == "bounce" and c.bounce is not None:
            if rfc in seen:  # its look-ups have no side effects: skip them
                return _Plan(item, c, "duplicate")
            return await self._bounce(conn, mailbox, c.bounce, item, c, seen, keep)
        if rfc in own:
            # A copy of mail the gateway sent (sent to itself, or a Sent folder): not a reply.
            seen.add(rfc)
            return _Plan(item, c, "own", claim=(rfc, "own", None))
        parsed = c.parsed
        conv = threads.find([*parsed.in_reply_to, *reversed(parsed.references)], parsed.from_addr)
        if conv is None:
            return keep("unmatched", f"from {parsed.from_addr}")
        if rfc in seen:
            return _Plan(item, c, "duplicate")
        seen.add(rfc)
        assert parsed.from_addr is not None and c.received_at is not None
        msg_id = new_id("msg")
        from_lead = parsed.from_addr.lower() == conv.lead_email.lower()
        reply = _Reply(msg_id, conv, {
            "id": msg_id,
            "conversation_id": conv.id,
            "workspace_id": mailbox.workspace_id,
            "mailbox_id": mailbox.id,
            "type": "reply",
            "direction": "inbound",
            "rfc_message_id": rfc,
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
            "metadata": conv.metadata or conv.conv_metadata or {},
            "is_from_lead": from_lead,
            "is_auto_reply": c.is_auto_reply,
            "read": c.is_auto_reply,
            "received_at": c.received_at,
        }, counts_unread=from_lead and not c.is_auto_reply)  # auto-replies arrive already read
        threads.replied(rfc, reply, c.received_at)
        return _Plan(item, c, "reply", claim=(rfc, "reply", msg_id), reply=reply)

    async def _reply_rows(
        self, conn: asyncpg.Connection, mailbox: MailboxRef, mailbox_email: str | None, plans: list[_Plan]
    ) -> dict[str, tuple[int, datetime]]:
        """Attachments and `reply.received` of the inserted replies; returns the conversation
        counters to apply (id → (unread increment, latest activity))."""
        with_files = sorted({p.reply.conv.id for p in plans if p.reply is not None and p.c.parsed is not None
                             and p.c.parsed.attachments})
        counts = await lookups.attachment_counts(conn, with_files)
        files: list[tuple[str, ParsedAttachment]] = []
        rows: list[writes.AttachmentRow] = []
        touched: dict[str, tuple[int, datetime]] = {}
        for p in plans:
            reply, parsed, at = p.reply, p.c.parsed, p.c.received_at
            assert reply is not None and parsed is not None and at is not None
            conv_id = reply.conv.id
            first = counts.get(conv_id, 0)
            described: list[dict[str, Any]] = []
            for position, part in enumerate(parsed.attachments):
                key = new_key(mailbox.workspace_id, part.filename)
                files.append((key, part))
                rows.append(writes.AttachmentRow(key, part.filename, part.content_type, len(part.data),
                                             reply.msg_id, conv_id, position))
                described.append({
                    "filename": part.filename,
                    "contentType": part.content_type,
                    "size": len(part.data),
                    "downloadUrl": f"{self.public_url}/v1/inbox/{conv_id}/attachments/{first + position}",
                })
            counts[conv_id] = first + len(parsed.attachments)
            inc, latest = touched.get(conv_id, (0, at))
            touched[conv_id] = (inc + (1 if reply.counts_unread else 0), max(latest, at))
            row = reply.row
            data: dict[str, Any] = {  # what events.message_event_data reads back, from memory
                "conversationId": conv_id,
                "identity": reply.conv.handle,
                "mailbox": {"id": mailbox.id, "email": mailbox_email},
                "messageId": reply.msg_id,
                "rfcMessageId": row["rfc_message_id"],
                "to": row["to_emails"][0] if row["to_emails"] else None,
                "from": row["from_email"],
                "subject": row["subject"],
                "metadata": row["metadata"] or {},
            }
            data.update(
                content=parsed.text,
                replyText=p.c.reply_text,
                htmlContent=parsed.html,
                isAutoReply=p.c.is_auto_reply,
                receivedAt=iso(at),
                attachments=described,
            )
            p.events.append(events.make_event("reply.received", mailbox.workspace_id, data))
        # Files are written before the commit: a crash leaves an orphan file, never a row without one.
        await asyncio.gather(*(self.storage.put(key, part.data) for key, part in files))
        await writes.insert_attachments(conn, mailbox.workspace_id, rows)
        return touched

    async def _bounce(
        self,
        conn: asyncpg.Connection,
        mailbox: MailboxRef,
        bounce: Bounce,
        item: Fetched,
        c: Classified,
        seen: set[str],
        keep: Callable[[str, str | None], _Plan],
    ) -> _Plan:
        """Bounces are rare: matched and recorded with their own statements, in batch order."""
        targets: list[tuple[asyncpg.Record, BounceRecipient | None]] = []
        original = None
        if bounce.original_message_id:
            original = await lookups.sent_by_rfc_id(conn, mailbox.workspace_id, bounce.original_message_id)
        if original is not None:
            to = {str(t).lower() for t in original["to_emails"]}
            rcpt = next((r for r in bounce.recipients if r.email.lower() in to), None)
            targets.append((original, rcpt or (bounce.recipients[0] if bounce.recipients else None)))
        else:
            for r in bounce.recipients:
                sent = await lookups.latest_sent_to(conn, mailbox.id, r.email)
                if sent is not None:
                    targets.append((sent, r))
        if not targets:
            return keep("unmatched_bounce", f"original {bounce.original_message_id}")
        seen.add(c.rfc_message_id)
        if not await writes.claim(conn, mailbox.id, c.rfc_message_id, "bounce", targets[0][0]["id"]):
            return _Plan(item, c, "duplicate")
        plan = _Plan(item, c, "bounce")
        for sent, rcpt in targets:
            bounce_type = rcpt.bounce_type if rcpt else bounce.bounce_type
            diagnostic = rcpt.diagnostic if rcpt else None
            if bounce_type == "hard":
                await writes.mark_bounced(conn, sent["id"], diagnostic)
                email = rcpt.email if rcpt else (sent["to_emails"][0] if sent["to_emails"] else None)
                if email:
                    await writes.suppress_hard_bounce(conn, mailbox.workspace_id, email)
            data = await events.message_event_data(conn, sent["id"])
            data.update(bounceType=bounce_type, status=rcpt.status if rcpt else None, diagnostic=diagnostic)
            plan.events.append(events.make_event("email.bounced", mailbox.workspace_id, data))
        return plan
