"""`handle_send`: one send command → caps, affinity, rows and deliver tasks, atomically.

Shared by HTTP (through the router, over RPC) and by plain AMQP producers. Round trips for
a new conversation: one read (identity, pool, suppressions and pins of the recipients) and
one autocommitted write statement (`gateway.db.messages.record_send`) that reserves the
caps (single-statement reservations in `mailgw_reserve_send`, exact under concurrency),
writes conversation, message, attachments and the deliver task, and records the answer
under the idempotency key — so a lone send holds no cap row lock across a round trip. A reply
adds the thread read and its lead's suppression check; attachments add the upload lookup.
The caller publishes `Outcome.tasks` after the write and answers with `status` / `body`.

`handle_batch` is the router's fast path for several new-conversation sends of one identity
that arrive together: one read for all of them (their leads' suppressions and pins with the
identity), then the same write statement per send, all pipelined in ONE round trip and one
implicit transaction (`messages.record_sends`), so the batch pays two round trips and one
commit (one WAL flush) instead of two and one per send. The cap rows it reserves stay locked
until that commit: the transaction is that one pipelined exchange with PostgreSQL (no broker
round trip) of at most `MAX_BATCH` sends. Any failure of a write rolls the whole batch back
(caps included) and the caller runs each send alone through `handle_send`, which answers
exactly as before (e.g. a replay for a key taken meanwhile).

Sends from the HTTP API may carry an API key the API did not look up (`Pending.key_check`,
see `gateway.api.auth`): the identity read checks it in the same statement (401 / 404).
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from gateway.db import affinity, conversations, idempotency, messages, usage
from gateway.db.affinity import Sender
from gateway.db.conversations import Thread, lead_id
from gateway.db.messages import KeyTaken, SendWrite, Written
from gateway.errors import BadRequest, GatewayError, NotFound, TransientError
from gateway.ids import new_id
from gateway.keys import KeyCheck
from gateway.mail.threading import new_message_id, references_for_reply, reply_subject
from gateway.send.idempotency import different_body, in_flight
from gateway.send.models import Prepared, SendCommand, prepare

Tx = asyncpg.Connection

# The response's key order (PostgreSQL's jsonb reorders keys; SPEC's order reads better).
_TOP = ("accepted", "rejected", "remaining", "dailyCap", "identity", "messages")
_ITEM = ("to", "id", "status", "reason", "convId", "affinity", "account")


@dataclass(frozen=True)
class Task:
    """A staged deliver task to publish right after the write (outbox row `outbox_id`)."""

    outbox_id: int
    message_id: str
    body: bytes


@dataclass
class Outcome:
    status: int
    body: Any
    replayed: bool = False
    tasks: list[Task] = field(default_factory=list)  # publish now (DELIVERY / deliver)
    outbox_ids: list[int] = field(default_factory=list)  # other staged rows: outbox.publish_rows


def ordered(body: Any) -> Any:
    """A send answer with SPEC's key order (first answer and replays read alike)."""
    if not isinstance(body, dict) or "messages" not in body:
        return body
    out = {k: body[k] for k in _TOP if k in body}
    out["messages"] = [{k: m[k] for k in _ITEM if k in m} for m in body.get("messages") or []]
    return out


async def handle_send(
    conn: Tx, cmd: SendCommand, *, key: str | None, digest: str, prepared: Prepared | None = None,
    key_check: KeyCheck | None = None,
) -> Outcome:
    """Validate, then do the whole send atomically (see gateway.send.idempotency)."""
    p = prepared if prepared is not None else prepare(cmd, cmd.workspaceId)
    leads = p.recipients  # empty in reply mode: the thread names the lead
    sender = await affinity.sender(conn, cmd.workspaceId, cmd.identity, leads, key_check)
    if sender is None:
        raise NotFound("Identity not found")
    w = await _plan(conn, cmd.workspaceId, sender, p)
    w.key, w.request_hash = key, digest
    try:
        written = await messages.record_send(conn, w)
    except KeyTaken:
        row = await idempotency.get(conn, sender.id, str(key))
        if row is None:
            raise TransientError("idempotency record vanished; retry") from None
        if row.request_hash != digest:
            raise different_body() from None
        if row.state != "done" or row.response_status is None:
            raise in_flight() from None
        return Outcome(row.response_status, ordered(row.response_body), replayed=True)
    return _outcome(p, written)


def _outcome(p: Prepared, written: Written) -> Outcome:
    tasks = (
        [Task(o, m, orjson.dumps({"messageId": m})) for o, m in written.tasks]
        if p.send_at is None else []  # scheduled: the scheduler relays when available_at comes
    )
    return Outcome(written.status, ordered(written.body), tasks=tasks)


MAX_BATCH = 32


@dataclass
class Pending:
    """A send waiting for a batch: the command, its validation, key and body hash."""

    cmd: SendCommand
    prepared: Prepared
    key: str | None
    digest: str
    key_check: KeyCheck | None = None  # an API key to check in the identity read

    @property
    def group(self) -> tuple[str, str, KeyCheck | None]:
        """Sends of one batch share the identity read, and so the key it checks."""
        return self.cmd.workspaceId, self.cmd.identity.lower(), self.key_check

    @property
    def batchable(self) -> bool:
        """New conversations only: a reply reads its thread, which an earlier send may change."""
        return self.cmd.convId is None


def take_batch(
    queue: list[Pending], limit: int = MAX_BATCH, busy: Collection[object] = (),
) -> tuple[list[Pending], list[Pending]]:
    """(the next batch, the rest in order): the first pending send whose `group` is not `busy`
    (being written: its sends would only wait for that commit on the identity's cap row) and
    the following ones of the same group, stopping before a lead or key already in the batch
    (the later send must see the earlier one's pin, or replay its key) and skipping sends of
    other groups. ([], queue) when every pending send's group is busy."""
    start = next((i for i, it in enumerate(queue) if it.group not in busy), None)
    if start is None:
        return [], queue
    first = queue[start]
    if not first.batchable:
        return [first], queue[:start] + queue[start + 1:]
    batch, rest = [first], queue[:start]
    leads = {a.lower() for a in first.prepared.recipients}
    keys = {first.key}
    for i, item in enumerate(queue[start + 1:], start + 1):
        if len(batch) >= limit:
            rest.extend(queue[i:])
            break
        if not item.batchable or item.group != first.group:
            rest.append(item)
            continue
        mine = {a.lower() for a in item.prepared.recipients}
        if (item.key is not None and item.key in keys) or not leads.isdisjoint(mine):
            rest.extend(queue[i:])  # keep order from here on
            break
        batch.append(item)
        leads |= mine
        keys.add(item.key)
    return batch, rest


async def handle_batch(conn: Tx, items: list[Pending]) -> list[Outcome | Exception]:
    """Several new-conversation sends of one identity (one `group`) in one transaction (module
    docstring).

    Per send, the Outcome or the `GatewayError` its planning raised (nothing written for it).
    Raises when a write fails: the transaction is rolled back and nothing of the batch stays.
    """
    first = items[0]
    leads = [a for it in items for a in it.prepared.recipients]
    try:
        sender = await affinity.sender(conn, first.cmd.workspaceId, first.cmd.identity, leads,
                                       first.key_check)
    except GatewayError as exc:  # the key check: the same answer for every send of the group
        return [copy.copy(exc) for _ in items]
    if sender is None:
        return [NotFound("Identity not found") for _ in items]
    planned: list[SendWrite | Exception] = []
    for it in items:
        try:
            w = await _plan(conn, first.cmd.workspaceId, sender, it.prepared)
        except (BadRequest, NotFound) as exc:
            planned.append(exc)
            continue
        w.key, w.request_hash = it.key, it.digest
        planned.append(w)
    writes = [w for w in planned if isinstance(w, SendWrite)]
    written = iter(await messages.record_sends(conn, writes) if writes else [])
    return [_outcome(it.prepared, next(written)) if isinstance(w, SendWrite) else w
            for it, w in zip(items, planned, strict=True)]


async def _plan(conn: Tx, workspace_id: str, sender: Sender, p: Prepared) -> SendWrite:
    """Everything the write statement needs; reads only (thread, uploads, suppressions)."""
    req = p.req
    thread: Thread | None = None
    if req.convId is not None:
        thread = await conversations.thread(conn, workspace_id, sender.id, req.convId)
        if thread is None:
            raise NotFound("Conversation not found")
        recipients = [thread.lead_email]
        suppressed = await affinity.suppressed(conn, workspace_id, recipients)
    else:
        recipients = p.recipients
        suppressed = sender.suppressed
    w = _shared(workspace_id, sender, p, thread)
    await _attachments(conn, workspace_id, p, w)
    if thread is not None:
        mbx = sender.pool.get(thread.mailbox_id or "")
        candidates = [mbx] if mbx is not None and mbx.usable else []
    else:
        candidates = [m for m in sender.pool.values() if m.usable]
    for m in candidates:
        w.pool_ids.append(m.id)
        w.pool_caps.append(m.daily_cap)
        w.pool_emails.append(m.email)
        w.pool_from_names.append(m.from_name or sender.display_name)
        # the Message-ID domain as new_message_id writes it (lower-case, IDN as A-labels)
        w.pool_domains.append(new_message_id(m.email.rpartition("@")[2]).rpartition("@")[2][:-1])
    for to in recipients:
        w.to.append(to)
        w.pinned.append(thread.mailbox_id if thread is not None else sender.pins.get(to.lower()))
        w.skip.append(
            "suppressed" if to.lower() in suppressed else None if candidates else "no_mailbox"
        )
        w.conversation_ids.append(thread.id if thread is not None else new_id("conv"))
        w.message_ids.append(new_id("msg"))
        w.tokens.append(secrets.token_urlsafe(18))
        w.lead_ids.append(lead_id(workspace_id, to))
    return w


def _shared(workspace_id: str, sender: Sender, p: Prepared, thread: Thread | None) -> SendWrite:
    req = p.req
    if thread is not None:
        subject = reply_subject(thread.subject)
        in_reply_to = thread.parent_id
        refs = (
            references_for_reply(thread.parent_id, thread.parent_references,
                                 [thread.parent_in_reply_to] if thread.parent_in_reply_to else None)
            if thread.parent_id else []
        )
        step = thread.next_step
    else:
        subject = req.subject or ""
        in_reply_to = p.in_reply_to
        refs = list(p.references)
        if in_reply_to and in_reply_to not in refs:
            refs.append(in_reply_to)
        step = 1
    return SendWrite(
        workspace_id=workspace_id, identity_id=sender.id, handle=sender.handle,
        identity_cap=sender.daily_cap, day=usage.day_in(sender.timezone, p.send_at),
        subject=subject, text=req.text, html=req.html, headers=req.headers or {},
        unsubscribe=req.unsubscribe, metadata=req.metadata or {}, in_reply_to=in_reply_to,
        references=refs, sequence_step=step, send_at=p.send_at,
        lead=req.lead.model_dump(exclude_none=True, exclude={"email"}) if req.lead else {},
        campaign_id=req.campaign.id if req.campaign else None,
        campaign_name=req.campaign.name if req.campaign else None,
        reply_conversation=thread.id if thread is not None else None,
    )


async def _attachments(conn: Tx, workspace_id: str, p: Prepared, w: SendWrite) -> None:
    refs = p.req.attachments or []
    if not refs:
        return
    found = await messages.uploads(conn, workspace_id, [a.key for a in refs])
    missing = [
        {"field": f"attachments[{i}].key", "message": "No uploaded attachment with this key"}
        for i, a in enumerate(refs) if a.key not in found
    ]
    if missing:
        raise BadRequest(details=missing)
    for ref in refs:
        up = found[ref.key]
        w.att_keys.append(ref.key)
        w.att_names.append(ref.filename or up["filename"])
        w.att_types.append(up["content_type"])
        w.att_sizes.append(up["size"])
