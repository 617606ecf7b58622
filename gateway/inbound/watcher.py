"""Watch one mailbox folder: catch up from the cursor in batches, then IDLE (or poll), forever.

A watcher is one task with its own IMAP connection, so a slow or broken mailbox stalls only
itself. Connection and login failures feed the mailbox's health and are retried with a
bounded exponential backoff; a lost lease ends the watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from typing import cast

import asyncpg

from gateway import outbox
from gateway.bus.publisher import Publisher
from gateway.config import Settings
from gateway.crypto import Vault
from gateway.db import inbound_leases as leasedb
from gateway.db import mailbox_health
from gateway.inbound.classify import Classified, Fetched
from gateway.inbound.ingest import Ingestor, LeaseLost, MailboxRef, Staged, classify_items
from gateway.inbound.session import ImapError, ImapSession, LoginFailed
from gateway.logging import get_logger

log = get_logger(__name__)

BATCH = 100  # messages per fetch and per transaction


@dataclass
class Backoff:
    """Bounded exponential backoff with jitter: 1 s, 2 s, 4 s … up to `ceiling`."""

    base: float = 1.0
    ceiling: float = 60.0
    attempt: int = 0

    def next_delay(self) -> float:
        delay: float = min(self.ceiling, self.base * 2.0 ** min(self.attempt, 30))
        self.attempt += 1
        return delay * random.uniform(0.8, 1.0)

    def reset(self) -> None:
        self.attempt = 0


class MailboxGone(Exception):
    """The mailbox was paused, deleted or lost its IMAP settings."""


@dataclass
class Watcher:
    settings: Settings
    pool: asyncpg.Pool
    vault: Vault
    publisher: Publisher | None
    ingestor: Ingestor
    mailbox_id: str
    folder: str

    async def run(self) -> None:
        backoff = Backoff(ceiling=min(60.0, max(1.0, self.settings.poll_interval)))
        while True:
            try:
                await self._session_loop(backoff)
            except (LeaseLost, MailboxGone) as exc:
                log.info("watcher_stopped", mailbox=self.mailbox_id, folder=self.folder, reason=repr(exc))
                return
            except LoginFailed as exc:
                log.warning("imap_login_failed", mailbox=self.mailbox_id, error=str(exc))
                await self._health(str(exc))
            except (ImapError, OSError, TimeoutError, asyncpg.PostgresError,
                    asyncpg.InterfaceError) as exc:
                log.warning("watcher_error", mailbox=self.mailbox_id, folder=self.folder, error=repr(exc))
            await asyncio.sleep(backoff.next_delay())

    async def _health(self, error: str | None) -> None:
        async with self.pool.acquire() as acquired, acquired.transaction():
            conn = cast(asyncpg.Connection, acquired)
            if error is None:
                oid = await mailbox_health.record_success(conn, self.mailbox_id)
            else:
                oid = await mailbox_health.record_failure(
                    conn, self.mailbox_id, error, self.settings.mailbox_unhealthy_after
                )
        if oid is not None and self.publisher is not None:
            await outbox.publish_rows(self.pool, self.publisher, [oid])

    async def _session_loop(self, backoff: Backoff) -> None:
        row = await leasedb.mailbox_for_watch(self.pool, self.mailbox_id)
        if row is None or not row["imap"]:
            raise MailboxGone(self.mailbox_id)
        imap = row["imap"]
        password = self.vault.decrypt(row["imap_password_enc"]) if row["imap_password_enc"] else ""
        session = await ImapSession.open(
            str(imap["host"]), int(imap["port"]), str(imap.get("security", "tls")),
            str(imap.get("username") or row["email"]), password,
        )
        await self._health(None)
        mailbox = MailboxRef(row["id"], row["workspace_id"], row["email"])
        try:
            state = await session.select(self.folder)
            cursor = await leasedb.get_cursor(self.pool, mailbox.id, self.folder)
            last = 0
            if cursor is not None and cursor.uidvalidity == state.uidvalidity:
                last = cursor.last_uid
            else:
                if cursor is not None:
                    log.warning("imap_uidvalidity_changed", mailbox=mailbox.id, folder=self.folder,
                                old=cursor.uidvalidity, new=state.uidvalidity)
                await leasedb.set_cursor(self.pool, mailbox.id, self.folder, state.uidvalidity, 0)
            while True:
                last = await self._catch_up(session, mailbox, state.uidvalidity, last)
                backoff.reset()
                if session.supports_idle:
                    # aioimaplib drops EXISTS notices that arrive during other commands, so a
                    # message landing between the last search and IDLE would wait for the next
                    # push: cap each IDLE at the poll interval as a safety net (still < 29 min).
                    await session.idle(min(self.settings.imap_idle_seconds, self.settings.poll_interval))
                else:
                    await asyncio.sleep(self.settings.poll_interval)
                    await session.noop()
        finally:
            await session.close()

    async def _catch_up(self, session: ImapSession, mailbox: MailboxRef, uidvalidity: int, last: int) -> int:
        """Ingest everything above `last`, searching again until a search finds nothing new."""
        for _ in range(1000):  # bounded: a mailbox filling faster than we ingest yields now and then
            uids = await session.uids_above(last)
            if not uids:
                break
            last = await self._ingest_uids(session, mailbox, uidvalidity, uids)
        return last

    async def _ingest_uids(
        self, session: ImapSession, mailbox: MailboxRef, uidvalidity: int, uids: list[int]
    ) -> int:
        return await ingest_uids(session, self.ingestor, mailbox, self.folder, uidvalidity, uids)


def batches(uids: list[int], batch: int = BATCH) -> list[list[int]]:
    """`uids` cut into batches of at most `batch`, in order.

    When there is more than one batch's worth, the first batches are smaller (a quarter of
    `batch`, then doubling): nothing overlaps the first batch's fetch and classification, and
    each batch's commit overlaps the preparation of the next one, so starting small fills the
    pipeline sooner."""
    if len(uids) <= batch:
        return [uids] if uids else []
    out: list[list[int]] = []
    size = max(1, batch // 4)
    start = 0
    while start < len(uids):
        out.append(uids[start:start + size])
        start += size
        size = min(batch, size * 2)
    return out


async def ingest_uids(
    session: ImapSession,
    ingestor: Ingestor,
    mailbox: MailboxRef,
    folder: str,
    uidvalidity: int,
    uids: list[int],
    batch: int = BATCH,
) -> int:
    """Fetch and ingest `uids` (ascending) in batches; returns the last UID committed.

    A pipeline, each batch still committed whole and in order: the next batch is fetched and
    classified while this one is persisted, and a committed batch's events are published while
    the next one is persisted (batches publish in order). At most one batch is prepared ahead:
    after a failure it is simply fetched again, since the cursor has not moved past it; events
    whose publish is cut short are relayed by the scheduler."""
    last = 0
    chunks = batches(uids, batch)
    if not chunks:
        return last

    async def prepare(chunk: list[int]) -> tuple[list[Fetched], list[Classified]]:
        items = await session.fetch(chunk)
        return items, await classify_items(items)

    async def publish_after(previous: asyncio.Future[None] | None, staged: list[Staged]) -> None:
        if previous is not None:
            await previous
        await ingestor.publish(mailbox, staged)

    ahead = asyncio.ensure_future(prepare(chunks[0]))
    publishing: asyncio.Future[None] | None = None
    try:
        for n, chunk in enumerate(chunks):
            items, classified = await ahead
            if n + 1 < len(chunks):
                ahead = asyncio.ensure_future(prepare(chunks[n + 1]))
            if len(items) != len(chunk):  # expunged meanwhile: UIDs are never reused
                log.warning("imap_uids_missing", mailbox=mailbox.id, folder=folder,
                            missing=sorted(set(chunk) - {i.uid for i in items})[:20])
            result, staged = await ingestor.commit(mailbox, folder, uidvalidity, items, chunk[-1], classified)
            if staged:
                publishing = asyncio.ensure_future(publish_after(publishing, staged))
            last = result.last_uid
            log.info("inbound_batch", mailbox=mailbox.id, folder=folder, last_uid=last, **result.outcomes)
        if publishing is not None:
            await publishing
            publishing = None
    except BaseException as exc:
        # The batch ahead is dropped (the session is closed after an error anyway); committed
        # events still go out unless this task is being cancelled (then the relay sends them).
        stop = [ahead] if isinstance(exc, Exception) else [ahead, publishing]
        for task in stop:
            if task is not None and not task.done():
                task.cancel()
        for task in (ahead, publishing):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        raise
    return last
