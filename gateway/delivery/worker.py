"""One deliver task: claim the message, build its MIME, send it, record the outcome, publish.

Crash safety. The row is claimed (`sending`, a lease, attempts+1) in one statement before any
SMTP traffic, and the outcome is committed before the task is acked:
- a redelivered task for a `sent` / `failed` / `bounced` message is acked without sending;
- a task for a message whose lease is still running (another worker holds it, or a worker that
  just died did) is parked on a delay queue and looked at again once the lease has run out;
- a `sending` row whose lease expired means its worker died mid-attempt. Nearly always that
  was before the server accepted DATA (connect, AUTH, envelope, or the transfer itself), so
  the message is **sent again** rather than failed: losing an accepted message is worse than
  the rare duplicate, which carries the same Message-ID and so is collapsed by most clients.
  The attempt is counted and logged as `delivery_lease_expired`.
The remaining window is the time between the server's 250 to DATA and the commit of the
outcome (one transaction, retried on a database hiccup): milliseconds. Under load, concurrent
claims and successes share one statement (`gateway.delivery.batch.Coalescer`): an outcome then
waits at most for the statement already in flight before its own commits, with no timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from aio_pika.abc import AbstractIncomingMessage

from gateway import outbox
from gateway.bus.batch_publish import Outgoing, publish_many
from gateway.bus.publisher import Publisher
from gateway.bus.topology import EVENTS, Topology
from gateway.config import Settings
from gateway.crypto import Vault
from gateway.delivery import store
from gateway.delivery.batch import Coalescer
from gateway.delivery.smtp import Account, SmtpFailure, SmtpPools
from gateway.errors import PermanentError
from gateway.logging import get_logger
from gateway.mail.build import (
    AttachmentPart,
    OutgoingMessage,
    envelope_recipients,
    render,
)
from gateway.mail.smtp_outcome import SmtpOutcome, classify
from gateway.storage import DirectoryStorage, Storage

log = get_logger(__name__)

_SECURITIES = ("tls", "starttls", "none")
_DB_ERRORS = (asyncpg.exceptions.PostgresConnectionError, asyncpg.InterfaceError, OSError,
              asyncpg.exceptions.SerializationError, asyncpg.exceptions.DeadlockDetectedError)


@dataclass(frozen=True)
class Outcome:
    """What one task did: sent, retry, failed, skipped, deferred or missing."""

    result: str
    message_id: str


class Deliverer:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        publisher: Publisher,
        topology: Topology,
        vault: Vault,
        storage: Storage | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.publisher = publisher
        self.topology = topology
        self.vault = vault
        self.storage = storage or DirectoryStorage(settings.attachments_path)
        self.smtp = SmtpPools(settings.smtp_connections_per_mailbox, settings.smtp_timeout)
        # An attempt never outlives its lease while this worker is alive.
        self.send_deadline = settings.smtp_timeout * 3
        self.lease = self.send_deadline + 15
        self._passwords: dict[str, str] = {}
        self.stamper = outbox.Stamper(pool)
        # Concurrent claims and recorded successes share statements (see gateway.delivery.batch).
        self.claims: Coalescer[str, asyncpg.Record | None] = Coalescer(
            lambda ids: store.claim_many(pool, ids, self.lease),
            lambda message_id: store.claim(pool, message_id, self.lease),
        )
        # One success statement at a time: the next one gathers every success that finished
        # meanwhile (larger batches, fewer statements and commits; measured in the benchmark).
        self.sent: Coalescer[store.SentItem, tuple[int, dict[str, Any]]] = Coalescer(
            lambda items: store.record_sent_many(pool, items),
            lambda item: store.record_sent_fast(pool, *item),
            max_inflight=1,
        )
        # The successes of one record statement publish their events together: one write for
        # all of them instead of one per message (confirms awaited together).
        self.events: Coalescer[dict[str, Any], BaseException | None] = Coalescer(
            self._publish_events, self._publish_event, max_inflight=8,
        )

    async def close(self) -> None:
        await self.smtp.close()
        await self.stamper.close()

    async def handle(self, message: AbstractIncomingMessage) -> None:
        """The consumer's handler: returning acks; PermanentError parks; anything else requeues."""
        try:
            body = orjson.loads(message.body)
            message_id = body["messageId"]
            if not isinstance(message_id, str) or not message_id:
                raise ValueError("messageId must be a non-empty string")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise PermanentError(f"malformed deliver task: {exc}") from exc
        await self.deliver(message_id)

    async def deliver(self, message_id: str) -> Outcome:
        row = await self.claims(message_id)
        if row is None:
            return await self._not_claimed(message_id)
        if row["was"] == "sending":
            log.warning("delivery_lease_expired", message_id=message_id, attempt=row["attempts"],
                        note="previous attempt died mid-send; sending again (possible duplicate)")
        try:
            spec, account, data = await self._prepare(row)
        except _PrepareFailed as exc:
            return await self._finish(row, exc.outcome, health=exc.health)
        pool = self.smtp.get(row["mailbox_id"], account)
        health = False
        try:
            async with asyncio.timeout(self.send_deadline):
                accepted = await pool.send(spec.from_email, envelope_recipients(spec), data)
        except SmtpFailure as failure:
            outcome = classify(failure.cause)
            health = failure.phase == "connect" or outcome.auth_failure
        except TimeoutError:
            outcome = SmtpOutcome("transient", None, f"SMTP attempt exceeded {self.send_deadline:g}s")
        else:
            code, _, _ = accepted.response.partition(" ")
            outcome = SmtpOutcome("sent", int(code) if code.isdigit() else None, accepted.response)
            if accepted.refused:
                log.info("delivery_partly_refused", message_id=message_id,
                         refused={k: f"{v.code} {v.message}" for k, v in accepted.refused.items()})
        return await self._finish(row, outcome, health=health)

    async def _not_claimed(self, message_id: str) -> Outcome:
        st = await store.state(self.pool, message_id)
        if st is None:
            log.warning("delivery_message_missing", message_id=message_id)
            return Outcome("missing", message_id)
        if st.status == "sending" and st.lease_left > 0:
            # Held by a live worker, or by one that just died: look again after the lease.
            delays = self.topology.smtp_delays
            delay = next((d for d in delays if d >= st.lease_left), delays[-1])
            await self.publisher.publish(
                "", self.topology.delay_queue(delay), orjson.dumps({"messageId": message_id}),
                message_id=f"deliver:{message_id}:lease",
            )
            log.info("delivery_deferred", message_id=message_id, delay=delay)
            return Outcome("deferred", message_id)
        log.info("delivery_skipped", message_id=message_id, status=st.status)
        return Outcome("skipped", message_id)

    async def _prepare(self, row: asyncpg.Record) -> tuple[OutgoingMessage, Account, bytes]:
        if row["mailbox_id"] is None or row["smtp"] is None or row["mailbox_deleted_at"] is not None:
            raise _PrepareFailed(SmtpOutcome("permanent", None, "the sending mailbox no longer exists"))
        smtp: dict[str, Any] = row["smtp"]
        enc = row["smtp_password_enc"]
        password: str | None = None
        if enc:
            password = self._passwords.get(enc)
            if password is None:
                try:
                    password = self._passwords[enc] = self.vault.decrypt(enc)
                except ValueError as exc:
                    raise _PrepareFailed(SmtpOutcome("transient", None, str(exc)), health=True) from exc
        security = smtp.get("security", "none")
        account = Account(
            host=str(smtp.get("host", "")),
            port=int(smtp.get("port", 25)),
            security=security if security in _SECURITIES else "none",
            username=smtp.get("username") or None,
            password=password,
            helo=row["from_email"].rpartition("@")[2] or None,
        )
        attachments: list[AttachmentPart] = []
        for att in row["attachments"]:
            try:
                content = await self.storage.get(att["key"])
            except (OSError, ValueError) as exc:
                raise _PrepareFailed(
                    SmtpOutcome("permanent", None, f"attachment {att['filename']!r} unavailable")
                ) from exc
            attachments.append(AttachmentPart(att["filename"], att["content_type"], content))
        unsubscribe: str | None = None
        if row["unsubscribe"] and row["to_emails"]:
            token = await store.unsubscribe_token(self.pool, row)
            unsubscribe = f"{self.settings.public_url}/v1/unsubscribe/{token}"
        spec = OutgoingMessage(
            from_email=row["from_email"],
            from_name=row["from_name"],
            to=list(row["to_emails"]),
            cc=list(row["cc_emails"]),
            bcc=list(row["bcc_emails"]),
            subject=row["subject"],
            message_id=row["rfc_message_id"],
            text=row["text_body"],
            html=row["html_body"],
            in_reply_to=row["in_reply_to"],
            references=list(row["references"]),
            headers=dict(row["headers"] or {}),
            attachments=attachments,
            list_unsubscribe=unsubscribe,
            list_unsubscribe_post=unsubscribe is not None,
        )
        try:
            data = render(spec)  # validates addresses, bodies and headers
        except ValueError as exc:
            raise _PrepareFailed(SmtpOutcome("permanent", None, f"cannot build message: {exc}")) from exc
        return spec, account, data

    async def _finish(self, row: asyncpg.Record, outcome: SmtpOutcome, *, health: bool) -> Outcome:
        s = self.settings
        attempts: int = row["attempts"]
        health_error = (outcome.message or "SMTP failure") if health else None
        if outcome.kind == "sent" and not store.needs_full_record(row):
            oid, event = await self._commit_fast(row, outcome)
            failed = await self.events(event)
            if failed is not None:
                raise failed  # requeued; the unstamped outbox row is relayed later
            self.stamper.add((oid,))
            log.info("delivery_sent", message_id=row["id"], mailbox_id=row["mailbox_id"],
                     attempt=attempts, smtp=outcome.message[:200])
            return Outcome("sent", row["id"])
        if outcome.kind == "sent":
            ids = await self._commit(lambda: store.record_sent(self.pool, row, outcome.message, outcome.code))
            result = "sent"
        elif outcome.kind == "transient" and attempts <= len(s.smtp_retry_schedule):
            delay = s.smtp_retry_schedule[attempts - 1]
            ids = await self._commit(lambda: store.record_retry(
                self.pool, self.topology, row, delay, code=outcome.code, error=outcome.message,
                health_error=health_error, threshold=s.mailbox_unhealthy_after,
            ))
            result = "retry"
        else:
            error = outcome.message
            if outcome.kind == "transient":
                error = f"retries exhausted after {attempts} attempts: {error}"
            ids = await self._commit(lambda: store.record_failed(
                self.pool, row, code=outcome.code, error=error,
                health_error=health_error, threshold=s.mailbox_unhealthy_after,
            ))
            result = "failed"
        log.info("delivery_" + result, message_id=row["id"], mailbox_id=row["mailbox_id"],
                 attempt=attempts, smtp_code=outcome.code, smtp=outcome.message[:200])
        await outbox.publish_rows(self.pool, self.publisher, ids)
        return Outcome(result, row["id"])

    async def _publish_events(self, events: list[dict[str, Any]]) -> list[BaseException | None]:
        return await publish_many(self.publisher, EVENTS, [
            Outgoing(event["type"], orjson.dumps(event), event["id"]) for event in events
        ])

    async def _publish_event(self, event: dict[str, Any]) -> BaseException | None:
        try:
            await self.publisher.publish(EVENTS, event["type"], orjson.dumps(event), message_id=event["id"])
        except Exception as exc:
            return exc
        return None

    async def _commit_fast(self, row: asyncpg.Record, outcome: SmtpOutcome) -> tuple[int, dict[str, Any]]:
        for attempt in range(3):
            try:
                return await self.sent((row, outcome.message, outcome.code))
            except _DB_ERRORS:
                if attempt == 2:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))  # back off before reconnecting
        raise AssertionError("unreachable")

    async def _commit(self, work: Callable[[], Awaitable[list[int]]]) -> list[int]:
        """Run one record_* transaction; a database hiccup gets two more tries (SMTP is done)."""
        for attempt in range(3):
            try:
                return await work()
            except _DB_ERRORS:
                if attempt == 2:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))  # back off before reconnecting
        raise AssertionError("unreachable")


class _PrepareFailed(Exception):
    def __init__(self, outcome: SmtpOutcome, *, health: bool = False) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome
        self.health = health
