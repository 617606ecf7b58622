"""The delivery role's SQL: claim a message with its lease, record sent / retry / failed.

Each `record_*` runs in one transaction and returns the outbox ids (events, retry task) the
caller publishes after commit.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

import asyncpg
import orjson

from gateway import events, outbox
from gateway.bus.topology import EVENTS, Topology
from gateway.db import mailbox_health
from gateway.timefmt import iso, now

_CLAIM = """
WITH old AS (
    SELECT id, status AS was, sending_until AS was_until, mailbox_id
    FROM messages WHERE id = $1 FOR UPDATE
)
UPDATE messages m
SET status = 'sending', sending_until = now() + make_interval(secs => $2), attempts = m.attempts + 1
FROM old LEFT JOIN mailboxes mb ON mb.id = old.mailbox_id
WHERE m.id = old.id
  AND (old.was IN ('queued', 'scheduled') OR (old.was = 'sending' AND old.was_until < now()))
RETURNING m.id, m.workspace_id, m.conversation_id, m.mailbox_id, m.from_email, m.from_name,
  m.to_emails, m.cc_emails, m.bcc_emails, m.subject, m.text_body, m.html_body, m.rfc_message_id,
  m.in_reply_to, m."references", m.headers, m.unsubscribe, m.attempts, m.job_id,
  m.scheduled_reply_id, m.metadata, old.was, mb.email AS mailbox_email, mb.smtp,
  mb.consecutive_failures, mb.health,
  (SELECT i.handle FROM conversations c JOIN identities i ON i.id = c.identity_id
   WHERE c.id = m.conversation_id) AS handle, mb.smtp_password_enc, mb.deleted_at AS mailbox_deleted_at,
  (SELECT COALESCE(json_agg(json_build_object('key', a.key, 'filename', a.filename,
                                              'content_type', a.content_type) ORDER BY a.position),
                   '[]'::json)
   FROM attachments a WHERE a.message_id = m.id) AS attachments
"""


# The same claim for many messages at once (see gateway.delivery.batch); rows are locked in id
# order so that concurrent batches cannot deadlock on each other.
_CLAIM_MANY = _CLAIM.replace(
    "FROM messages WHERE id = $1 FOR UPDATE",
    "FROM messages WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
)
assert _CLAIM_MANY != _CLAIM


@dataclass(frozen=True)
class State:
    status: str | None
    lease_left: float  # seconds until the current lease expires (<= 0: expired or none)


async def claim(pool: asyncpg.Pool, message_id: str, lease_seconds: float) -> asyncpg.Record | None:
    """Take the message for one attempt (status `sending`, lease, attempts+1) or None."""
    row: asyncpg.Record | None = await pool.fetchrow(_CLAIM, message_id, lease_seconds)
    return row


async def claim_many(
    pool: asyncpg.Pool, message_ids: list[str], lease_seconds: float
) -> list[asyncpg.Record | None]:
    """`claim` for several messages in one statement, aligned with `message_ids`.

    A message asked for twice is claimed once: the later asks get None, as a second `claim`
    would (the row is then `sending` under a live lease).
    """
    rows = await pool.fetch(_CLAIM_MANY, sorted(set(message_ids)), lease_seconds)
    by_id: dict[str, asyncpg.Record | None] = {r["id"]: r for r in rows}
    return [by_id.pop(mid, None) for mid in message_ids]


async def state(pool: asyncpg.Pool, message_id: str) -> State | None:
    row = await pool.fetchrow(
        "SELECT status, COALESCE(EXTRACT(EPOCH FROM sending_until - now()), 0)::float8 AS left"
        " FROM messages WHERE id = $1",
        message_id,
    )
    return None if row is None else State(row["status"], row["left"])


async def unsubscribe_token(conn: asyncpg.Pool | asyncpg.Connection, row: asyncpg.Record) -> str:
    """The message's one-click token: made on the first attempt, reused by retries."""
    email = row["to_emails"][0].lower()
    token: str = await conn.fetchval(
        "WITH existing AS (SELECT token FROM unsubscribe_tokens WHERE message_id = $3 LIMIT 1),"
        " made AS (INSERT INTO unsubscribe_tokens (token, workspace_id, email, message_id,"
        "          conversation_id)"
        "   SELECT $1, $2, $4, $3, $5 WHERE NOT EXISTS (SELECT 1 FROM existing) RETURNING token)"
        " SELECT token FROM existing UNION ALL SELECT token FROM made",
        secrets.token_urlsafe(24), row["workspace_id"], row["id"], email,
        row["conversation_id"],
    )
    return token


async def _job_done(
    conn: asyncpg.Connection, row: asyncpg.Record, data: dict[str, Any], error: str | None
) -> list[int]:
    """Finish the forward job / scheduled reply this message carries out, if any."""
    ids: list[int] = []
    if row["job_id"]:
        job = await conn.fetchrow(
            "UPDATE jobs SET status = $2, result = $3, error = $4, updated_at = now()"
            " WHERE id = $1 RETURNING payload",
            row["job_id"], "failed" if error else "completed",
            None if error else {"messageId": row["rfc_message_id"]}, error,
        )
        payload = (job["payload"] if job is not None else None) or {}
        to_emails = payload.get("toEmails") or [*row["to_emails"], *row["cc_emails"]]
        fdata = {**data, "jobId": row["job_id"], "toEmails": to_emails}
        if error:
            fdata["error"] = error
        kind = "forward.failed" if error else "forward.completed"
        _, oid = await events.stage(conn, kind, row["workspace_id"], fdata)
        ids.append(oid)
    if row["scheduled_reply_id"]:
        await conn.execute(
            "UPDATE scheduled_replies SET status = $2, error = $3, message_id = COALESCE(message_id, $4),"
            " updated_at = now() WHERE id = $1",
            row["scheduled_reply_id"], "failed" if error else "sent", error, row["id"],
        )
    return ids


async def record_sent(
    pool: asyncpg.Pool, row: asyncpg.Record, response: str, code: int | None
) -> list[int]:
    async with pool.acquire() as proxy, proxy.transaction():
        conn = cast(asyncpg.Connection, proxy)  # the core helpers are typed for Connection
        sent_at = now()
        health = await conn.fetchrow(
            "WITH msg AS (UPDATE messages SET status = 'sent', sent_at = $2, smtp_response = $3,"
            "               smtp_code = $4, error = NULL, sending_until = NULL WHERE id = $1),"
            " conv AS (UPDATE conversations SET updated_at = $2,"
            "          last_activity_at = GREATEST(last_activity_at, $2) WHERE id = $6)"
            " UPDATE mailboxes SET sent_total = sent_total + 1, last_used_at = $2"
            " WHERE id = $5 RETURNING consecutive_failures, health",
            row["id"], sent_at, response, code, row["mailbox_id"], row["conversation_id"],
        )
        ids: list[int] = []
        if health is not None and (health["consecutive_failures"] or health["health"] != "healthy"):
            recovered = await mailbox_health.record_success(conn, row["mailbox_id"])
            if recovered is not None:
                ids.append(recovered)
        data = await events.message_event_data(conn, row["id"])
        _, oid = await events.stage(
            conn, "email.sent", row["workspace_id"],
            {**data, "sentAt": iso(sent_at), "smtpResponse": response},
        )
        ids.append(oid)
        ids += await _job_done(conn, row, data, None)
        return ids


_SENT_FAST = """
WITH msg AS (UPDATE messages SET status = 'sent', sent_at = $2, smtp_response = $3, smtp_code = $4,
                                 error = NULL, sending_until = NULL WHERE id = $1),
     conv AS (UPDATE conversations SET last_activity_at = GREATEST(last_activity_at, $2),
                                       updated_at = $2 WHERE id = $6),
     mbx AS (UPDATE mailboxes SET sent_total = sent_total + 1, last_used_at = $2 WHERE id = $5),
     ev AS (INSERT INTO events (id, workspace_id, type, data) VALUES ($7, $8, 'email.sent', $9))
INSERT INTO outbox (exchange, routing_key, message_id, body) VALUES ($10, 'email.sent', $7, $11)
RETURNING id
"""


def needs_full_record(row: asyncpg.Record) -> bool:
    """Jobs, scheduled replies and a mailbox recovery take the transactional path."""
    return bool(row["job_id"] or row["scheduled_reply_id"] or row["consecutive_failures"]
                or row["health"] != "healthy")


async def record_sent_fast(
    pool: asyncpg.Pool, row: asyncpg.Record, response: str, code: int | None
) -> tuple[int, dict[str, Any]]:
    """The common success: every write in one statement (atomic); returns outbox id and event."""
    sent_at, event = _sent_event(row, response)
    oid: int = await pool.fetchval(
        _SENT_FAST, row["id"], sent_at, response, code, row["mailbox_id"], row["conversation_id"],
        event["id"], row["workspace_id"], event["data"], EVENTS, orjson.dumps(event),
    )
    return oid, event


_SENT_MANY = """
WITH v AS (
    SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::int[], $5::text[],
                         $6::text[], $7::text[], $8::text[], $9::text[], $10::bytea[])
        AS v(id, sent_at, response, code, mailbox_id, conversation_id, event_id, workspace_id,
             data, body)
),
     msg AS (UPDATE messages m SET status = 'sent', sent_at = v.sent_at, smtp_response = v.response,
                                   smtp_code = v.code, error = NULL, sending_until = NULL
             FROM v WHERE m.id = v.id),
     conv AS (UPDATE conversations c SET updated_at = x.at,
                                         last_activity_at = GREATEST(c.last_activity_at, x.at)
              FROM (SELECT conversation_id, max(sent_at) AS at FROM v GROUP BY 1) x
              WHERE c.id = x.conversation_id),
     mbx AS (UPDATE mailboxes b SET sent_total = b.sent_total + x.n, last_used_at = x.at
             FROM (SELECT mailbox_id, count(*) AS n, max(sent_at) AS at FROM v GROUP BY 1) x
             WHERE b.id = x.mailbox_id),
     ev AS (INSERT INTO events (id, workspace_id, type, data)
            SELECT event_id, workspace_id, 'email.sent', data::jsonb FROM v)
INSERT INTO outbox (exchange, routing_key, message_id, body)
SELECT $11, 'email.sent', event_id, body FROM v
RETURNING id, message_id
"""

SentItem = tuple[asyncpg.Record, str, "int | None"]  # claimed row, SMTP response, SMTP code


def _sent_event(row: asyncpg.Record, response: str) -> tuple[datetime, dict[str, Any]]:
    sent_at = now()
    event = events.make_event(
        "email.sent", row["workspace_id"],
        {**events.message_data(row), "sentAt": iso(sent_at), "smtpResponse": response},
    )
    return sent_at, event


async def record_sent_many(
    pool: asyncpg.Pool, items: list[SentItem]
) -> list[tuple[int, dict[str, Any]]]:
    """`record_sent_fast` for several messages in one statement (atomic), aligned with `items`."""
    made = [(row, response, code, *_sent_event(row, response)) for row, response, code in items]
    if len({row["id"] for row, *_ in made}) != len(made):
        raise ValueError("a message recorded twice in one batch")  # the caller retries singly
    cols: list[list[Any]] = [[] for _ in range(10)]
    for row, response, code, sent_at, event in made:
        for col, value in zip(cols, (
            row["id"], sent_at, response, code, row["mailbox_id"], row["conversation_id"],
            event["id"], row["workspace_id"], orjson.dumps(event["data"]).decode(), orjson.dumps(event),
        ), strict=True):
            col.append(value)
    rows = await pool.fetch(_SENT_MANY, *cols, EVENTS)
    oids = {r["message_id"]: r["id"] for r in rows}
    return [(oids[event["id"]], event) for *_, event in made]


async def _attempt_failed(
    conn: asyncpg.Connection,
    row: asyncpg.Record,
    status: Literal["queued", "failed"],
    code: int | None,
    error: str,
    health_error: str | None,
    threshold: int,
) -> list[int]:
    """Set the message's status (`queued` to retry, `failed` to give up) after a failed attempt
    and count the failure on its mailbox; returns the outbox id of a `mailbox.unhealthy`."""
    await conn.execute(
        "UPDATE messages SET status = $4, sending_until = NULL, smtp_code = $2, error = $3"
        " WHERE id = $1",
        row["id"], code, error[:2000], status,
    )
    ids: list[int] = []
    if health_error is not None and row["mailbox_id"]:
        tipped = await mailbox_health.record_failure(conn, row["mailbox_id"], health_error, threshold)
        if tipped is not None:
            ids.append(tipped)
    return ids


async def record_retry(
    pool: asyncpg.Pool,
    topology: Topology,
    row: asyncpg.Record,
    delay: int,
    *,
    code: int | None,
    error: str,
    health_error: str | None,
    threshold: int,
) -> list[int]:
    """Back to `queued` and a retry task staged for the delay queue of `delay` seconds."""
    async with pool.acquire() as proxy, proxy.transaction():
        conn = cast(asyncpg.Connection, proxy)  # the core helpers are typed for Connection
        ids = await _attempt_failed(conn, row, "queued", code, error, health_error, threshold)
        body = orjson.dumps({"messageId": row["id"], "attempt": row["attempts"] + 1})
        ids.append(
            await outbox.stage(
                conn, "", topology.delay_queue(delay), body,
                message_id=f"deliver:{row['id']}:{row['attempts'] + 1}",
            )
        )
        return ids


async def record_failed(
    pool: asyncpg.Pool,
    row: asyncpg.Record,
    *,
    code: int | None,
    error: str,
    health_error: str | None,
    threshold: int,
) -> list[int]:
    async with pool.acquire() as proxy, proxy.transaction():
        conn = cast(asyncpg.Connection, proxy)  # the core helpers are typed for Connection
        ids = await _attempt_failed(conn, row, "failed", code, error, health_error, threshold)
        data = await events.message_event_data(conn, row["id"])
        _, oid = await events.stage(
            conn, "email.failed", row["workspace_id"],
            {**data, "smtpCode": code, "smtpMessage": error, "attempts": row["attempts"]},
        )
        ids.append(oid)
        ids += await _job_done(conn, row, data, error)
        return ids
