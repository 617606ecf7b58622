"""Outbound message rows written by the router: everything delivery needs (docs/contracts.md).

`record_send` is the router's whole send as ONE statement (data-modifying CTEs;
autocommitted alone, or with the other sends of a batch in one transaction): per recipient
the cap reservations (`mailgw_reserve_send`, migration 0010), then new conversations (or the
replied-to one touched), `type = 'sent'` messages with `status = 'queued'`, attachment rows,
their deliver tasks in `outbox` (the same rows `gateway.outbox.stage` writes), pins, and the
answer recorded under the idempotency key. A send alone holds no cap row lock across a round
trip (locks last one statement); a batch (`gateway.send.handler.handle_batch`, at most
`MAX_BATCH` sends of one identity, `record_sends`: the statements pipelined in one round trip)
holds them until its one commit, never across a broker round trip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import asyncpg

from gateway.bus.topology import DELIVER_KEY, DELIVERY
from gateway.db.idempotency import TTL

Tx = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


@dataclass
class SendWrite:
    """One send request: shared values, one entry per recipient in the per-recipient lists,
    the usable candidate mailboxes, and the idempotency key to record the answer under."""

    workspace_id: str
    identity_id: str
    handle: str
    identity_cap: int
    day: date
    subject: str
    text: str | None
    html: str | None
    headers: dict[str, str]
    unsubscribe: bool
    metadata: dict[str, Any]
    in_reply_to: str | None
    references: list[str]
    sequence_step: int
    send_at: datetime | None
    lead: dict[str, Any]
    campaign_id: str | None
    campaign_name: str | None
    reply_conversation: str | None  # reply mode: the conversation used instead of new ones
    # per recipient, in request order
    to: list[str] = field(default_factory=list)
    pinned: list[str | None] = field(default_factory=list)
    skip: list[str | None] = field(default_factory=list)  # a rejection reason known beforehand
    conversation_ids: list[str] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)  # Message-ID left-hand sides
    lead_ids: list[str] = field(default_factory=list)
    # candidate mailboxes (usable ones of the pool, or the replied-to conversation's)
    pool_ids: list[str] = field(default_factory=list)
    pool_caps: list[int] = field(default_factory=list)
    pool_emails: list[str] = field(default_factory=list)
    pool_from_names: list[str | None] = field(default_factory=list)
    pool_domains: list[str] = field(default_factory=list)  # Message-ID domains (A-labels)
    # attachments to link to every accepted message
    att_keys: list[str] = field(default_factory=list)
    att_names: list[str] = field(default_factory=list)
    att_types: list[str] = field(default_factory=list)
    att_sizes: list[int] = field(default_factory=list)
    key: str | None = None
    request_hash: str = ""


@dataclass(frozen=True)
class Written:
    status: int
    body: dict[str, Any]
    tasks: list[tuple[int, str]]  # (outbox id, message id) of the deliver tasks


class KeyTaken(Exception):
    """Another command recorded this idempotency key first; nothing was written."""


_SQL = f"""
WITH pick AS MATERIALIZED (
  SELECT r.n, r.email, r.pinned, r.skip, r.conv, r.msg, r.token, r.lid, f.mailbox_id AS mbx,
         f.identity_used
  FROM unnest($5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
       WITH ORDINALITY AS r(email, pinned, skip, conv, msg, token, lid, n)
  CROSS JOIN LATERAL mailgw_reserve_send(r.skip IS NOT NULL, $2, $4, $3, r.pinned, $12::text[],
                                         $13::int[]) AS f
  ORDER BY r.n
), acc AS (
  SELECT p.*, b.email AS from_email, b.from_name, '<' || p.token || '@' || b.domain || '>' AS rfc,
         CASE WHEN $29::text IS NOT NULL OR p.mbx = p.pinned THEN 'existing'
              WHEN p.pinned IS NULL THEN 'new' ELSE 'reassigned' END AS affinity
  FROM pick p
  JOIN unnest($12::text[], $14::text[], $15::text[], $16::text[]) AS b(id, email, from_name, domain)
    ON b.id = p.mbx
), conv AS (
  INSERT INTO conversations (id, workspace_id, identity_id, mailbox_id, lead_id, lead_email, lead,
                             campaign_id, campaign_name, subject, metadata)
  SELECT a.conv, $1, $2, a.mbx, a.lid, a.email, $17::jsonb, $18, $19, $20, $21::jsonb
  FROM acc a WHERE $29::text IS NULL
  RETURNING 1
), msg AS (
  INSERT INTO messages (id, conversation_id, workspace_id, mailbox_id, rfc_message_id, in_reply_to,
                        "references", from_email, from_name, to_emails, subject, text_body, html_body,
                        headers, unsubscribe, metadata, sequence_step, send_at, type, direction, status)
  SELECT a.msg, a.conv, $1, a.mbx, a.rfc, $22, $23::text[], a.from_email, a.from_name,
         ARRAY[a.email], $20, $24, $25, $26::jsonb, $27, $21::jsonb, $28, $30,
         'sent', 'outbound', 'queued'
  FROM acc a
  RETURNING 1
), att AS (
  INSERT INTO attachments (id, workspace_id, key, filename, content_type, size, message_id,
                           conversation_id, position)
  SELECT 'att_' || substr(md5(random()::text || a.msg || x.pos), 1, 16), $1, x.key, x.name, x.type,
         x.size, a.msg, a.conv, x.pos - 1
  FROM acc a
  CROSS JOIN unnest($31::text[], $32::text[], $33::text[], $34::bigint[]) WITH ORDINALITY
       AS x(key, name, type, size, pos)
  RETURNING 1
), task AS (
  INSERT INTO outbox (exchange, routing_key, message_id, body, headers, available_at)
  SELECT '{DELIVERY}', '{DELIVER_KEY}', 'deliver:' || a.msg,
         convert_to('{{"messageId":"' || a.msg || '"}}', 'UTF8'), '{{}}', COALESCE($30, now())
  FROM acc a ORDER BY a.n
  RETURNING id, substr(message_id, 9) AS msg
), pinned AS (
  INSERT INTO affinities (identity_id, lead_email, mailbox_id)
  SELECT $2, lower(a.email), a.mbx FROM acc a WHERE $29::text IS NULL
  ON CONFLICT (identity_id, lead_email) DO UPDATE SET mailbox_id = EXCLUDED.mailbox_id,
    updated_at = now() WHERE affinities.mailbox_id <> EXCLUDED.mailbox_id
  RETURNING 1
), thread AS (
  UPDATE conversations SET last_activity_at = now(), updated_at = now()
  WHERE id = $29 AND EXISTS (SELECT 1 FROM acc) RETURNING 1
), answer AS (
  SELECT CASE WHEN EXISTS (SELECT 1 FROM acc) THEN 202 ELSE 429 END AS status,
    jsonb_build_object(
      'accepted', (SELECT count(*) FROM acc),
      'rejected', (SELECT count(*) FROM pick) - (SELECT count(*) FROM acc),
      'remaining', greatest($3 - (SELECT identity_used FROM pick ORDER BY n DESC LIMIT 1), 0),
      'dailyCap', $3, 'identity', $35::text,
      'messages', (
        SELECT COALESCE(jsonb_agg(CASE WHEN a.n IS NULL
          THEN jsonb_build_object('to', p.email, 'status', 'rejected',
                                  'reason', COALESCE(p.skip, 'cap_exceeded'))
          ELSE jsonb_build_object('to', p.email, 'id', a.rfc, 'status', 'accepted', 'convId', a.conv,
                                  'affinity', a.affinity,
                                  'account', jsonb_build_object('id', a.mbx, 'email', a.from_email))
          END ORDER BY p.n), '[]'::jsonb)
        FROM pick p LEFT JOIN acc a ON a.n = p.n)
    ) AS body
), record AS (
  INSERT INTO idempotency_keys AS k (scope, key, request_hash, state, response_status, response_body,
                                     expires_at)
  SELECT $2, $36, $37, 'done', answer.status, answer.body, now() + interval '{TTL}'
  FROM answer WHERE $36::text IS NOT NULL
  ON CONFLICT (scope, key) DO UPDATE SET state = 'done', request_hash = EXCLUDED.request_hash,
    response_status = EXCLUDED.response_status, response_body = EXCLUDED.response_body,
    created_at = now(), expires_at = EXCLUDED.expires_at
  WHERE (k.state = 'processing' AND k.request_hash = EXCLUDED.request_hash) OR k.expires_at <= now()
  RETURNING 1
)
SELECT answer.status, answer.body,
       (SELECT COALESCE(array_agg(id ORDER BY id), '{{}}') FROM task) AS task_ids,
       (SELECT COALESCE(array_agg(msg ORDER BY id), '{{}}') FROM task) AS task_msgs,
       CASE WHEN $36::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM record)
            THEN mailgw_key_taken() ELSE 0 END AS taken,
       (SELECT count(*) FROM conv) + (SELECT count(*) FROM msg) + (SELECT count(*) FROM att)
       + (SELECT count(*) FROM pinned) + (SELECT count(*) FROM thread) AS written
FROM answer
"""


async def record_send(conn: Tx | asyncpg.Pool, w: SendWrite) -> Written:
    """The whole send as one statement: reservations, rows, tasks, the answer. Autocommitted
    for a send alone; several sends of one identity may share a transaction
    (`gateway.send.handler.handle_batch`), which then commits or rolls back all of them.

    Raises `KeyTaken` (nothing written) when the idempotency key was recorded meanwhile.
    """
    try:
        row = await conn.fetchrow(_SQL, *_args(w))
    except asyncpg.PostgresError as exc:
        if getattr(exc, "sqlstate", None) == "MG001":
            raise KeyTaken() from None
        raise
    assert row is not None
    return _written(row)


async def record_sends(conn: Tx, writes: list[SendWrite]) -> list[Written]:
    """Several sends (of one identity, in order) as `record_send` statements pipelined in ONE
    round trip and one implicit transaction (asyncpg `fetchmany`: one Sync for all): they
    commit together or not at all. Raises `KeyTaken` (nothing written) when any key was
    recorded meanwhile; the caller then runs each send alone."""
    try:
        rows = await conn.fetchmany(_SQL, [_args(w) for w in writes])
    except asyncpg.PostgresError as exc:
        if getattr(exc, "sqlstate", None) == "MG001":
            raise KeyTaken() from None
        raise
    assert len(rows) == len(writes)  # the statement returns exactly one row
    return [_written(r) for r in rows]


def _args(w: SendWrite) -> tuple[Any, ...]:
    return (
        w.workspace_id, w.identity_id, w.identity_cap, w.day,
        w.to, w.pinned, w.skip, w.conversation_ids, w.message_ids, w.tokens, w.lead_ids,
        w.pool_ids, w.pool_caps, w.pool_emails, w.pool_from_names, w.pool_domains,
        w.lead, w.campaign_id, w.campaign_name, w.subject, w.metadata,
        w.in_reply_to, w.references, w.text, w.html, w.headers, w.unsubscribe, w.sequence_step,
        w.reply_conversation, w.send_at,
        w.att_keys, w.att_names, w.att_types, w.att_sizes,
        w.handle, w.key, w.request_hash,
    )


def _written(row: asyncpg.Record) -> Written:
    return Written(row["status"], row["body"], list(zip(row["task_ids"], row["task_msgs"], strict=True)))


async def uploads(conn: Tx, workspace_id: str, keys: list[str]) -> dict[str, asyncpg.Record]:
    """Uploaded (not yet linked) attachment rows of the workspace, by key."""
    rows = await conn.fetch(
        "SELECT key, filename, content_type, size FROM attachments"
        " WHERE workspace_id = $1 AND key = ANY($2::text[]) AND conversation_id IS NULL",
        workspace_id, keys,
    )
    return {r["key"]: r for r in rows}
