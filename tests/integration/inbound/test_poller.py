"""The poller role on real Dovecot: IDLE pick-up, bad mail, UIDVALIDITY resync, health, crashes,
and two pollers sharing the mailboxes through leases."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from consumers.poller import run as run_poller
from consumers.runner import close_context, open_context
from gateway.config import Settings
from gateway.crypto import Vault
from tests.integration.inbound.conftest import Appender, Lab, make_dsn, make_lab, make_mail, wait_for
from tests.support.mailserver import imap_login
from tests.support.processes import role_env

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


@contextlib.asynccontextmanager
async def poller(settings: Settings) -> AsyncIterator[None]:
    ctx = await open_context(settings, "test-poller")
    stop = asyncio.Event()
    task = asyncio.create_task(run_poller(ctx, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)
        await close_context(ctx)


def poller_settings(settings: Settings, folder: str, **kw: object) -> Settings:
    return settings.model_copy(update={"imap_folders": [folder], "lease_seconds": 3.0,
                                       "poll_interval": 1.0, **kw})


async def inbound_count(pool: asyncpg.Pool, mailbox_id: str | None = None) -> int:
    n: int = await pool.fetchval(
        "SELECT count(*) FROM messages WHERE direction = 'inbound' AND ($1::text IS NULL OR mailbox_id = $1)",
        mailbox_id,
    )
    return n


async def test_idle_picks_up_replies_bounces_and_bad_mail(
    pool: asyncpg.Pool, settings: Settings, lab: Lab, append: Appender
) -> None:
    await append(lab.folder, make_mail(sender=lab.lead, to=lab.mailbox_email, body="before start"))
    async with poller(poller_settings(settings, lab.folder)):
        await wait_for(lambda: _eq(inbound_count(pool), 1))  # catch-up from UID 1
        # Then pushed through IDLE while the watcher waits.
        await append(
            lab.folder,
            make_mail(sender=lab.lead, to=lab.mailbox_email, in_reply_to=lab.sent_rfc_id, body="yes!"),
            b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\xff\xfe",
            b"\x00\x01 not mail at all \xff",
            make_dsn(reporter="mx.example.test", to=lab.mailbox_email, failed=lab.lead,
                     original_id=lab.sent_rfc_id),
        )
        await wait_for(lambda: _eq(pool.fetchval("SELECT last_uid FROM imap_cursors"), 5))
    assert await inbound_count(pool) == 2
    assert await pool.fetchval("SELECT status FROM messages WHERE id = $1", lab.sent_message_id) == "bounced"
    reasons = [r["reason"] for r in await pool.fetch("SELECT reason FROM inbound_quarantine ORDER BY uid")]
    assert reasons == ["unmatched", "unparseable"]  # a stranger's broken multipart; no headers
    assert await pool.fetchval("SELECT count(*) FROM events WHERE type = 'email.bounced'") == 1


async def _eq(value: object, expected: object) -> bool:
    return (await value) == expected  # type: ignore[misc]


async def test_uidvalidity_change_resyncs_without_duplicates(
    pool: asyncpg.Pool, settings: Settings, lab: Lab, append: Appender
) -> None:
    mails = [make_mail(sender=lab.lead, to=lab.mailbox_email, body=f"m{i}") for i in range(4)]
    await append(lab.folder, *mails[:3])
    async with poller(poller_settings(settings, lab.folder)):
        await wait_for(lambda: _eq(inbound_count(pool), 3))
    old = await pool.fetchval("SELECT uidvalidity FROM imap_cursors")
    client = await imap_login("gateway@example.test")  # delete and re-create: a new UIDVALIDITY
    try:
        assert (await client.delete(lab.folder)).result == "OK"
        assert (await client.create(lab.folder)).result == "OK"
    finally:
        await client.logout()
    await append(lab.folder, mails[3], *mails[:3])
    async with poller(poller_settings(settings, lab.folder)):
        await wait_for(lambda: _eq(inbound_count(pool), 4))
        await wait_for(lambda: _eq(pool.fetchval("SELECT last_uid FROM imap_cursors"), 4))
    assert await pool.fetchval("SELECT uidvalidity FROM imap_cursors") != old
    assert await pool.fetchval("SELECT count(*) FROM events WHERE type = 'reply.received'") == 4


async def test_broken_mailbox_feeds_health_and_does_not_stall_others(
    pool: asyncpg.Pool, settings: Settings, vault: Vault, lab: Lab, append: Appender
) -> None:
    broken = await make_lab(pool, vault, password="wrong")
    await append(lab.folder, make_mail(sender=lab.lead, to=lab.mailbox_email))
    async with poller(poller_settings(settings, lab.folder)):
        await wait_for(lambda: _eq(inbound_count(pool, lab.mailbox_id), 1))
        await wait_for(lambda: _eq(pool.fetchval(
            "SELECT consecutive_failures > 0 FROM mailboxes WHERE id = $1", broken.mailbox_id), True))
    row = await pool.fetchrow("SELECT last_error, consecutive_failures FROM mailboxes WHERE id = $1",
                              lab.mailbox_id)
    assert row["consecutive_failures"] == 0
    assert "login" in (await pool.fetchval("SELECT last_error FROM mailboxes WHERE id = $1",
                                           broken.mailbox_id)).lower()


# --- separate processes --------------------------------------------------------------------


def _env(settings: Settings, folder: str, lease: float) -> dict[str, str]:
    return role_env(settings, MAILGW_IMAP_FOLDERS=folder, MAILGW_LEASE_SECONDS=str(lease),
                    MAILGW_POLL_INTERVAL="1")


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[object]:
    procs: list[subprocess.Popen[bytes]] = []

    def _spawn(env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"poller{len(procs)}.log", "wb")
        proc = subprocess.Popen([str(ROOT / ".venv/bin/mailgw"), "worker", "poller"], env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        procs.append(proc)
        return proc

    yield _spawn
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def test_sigkill_mid_batch_loses_and_duplicates_nothing(
    pool: asyncpg.Pool, settings: Settings, lab: Lab, append: Appender, spawn: object
) -> None:
    total = 350
    await append(lab.folder, *[make_mail(sender=lab.lead, to=lab.mailbox_email, body=f"n{i}")
                               for i in range(total)])
    env = _env(settings, lab.folder, lease=2.0)
    first = spawn(env)  # type: ignore[operator]
    await wait_for(lambda: _gt(inbound_count(pool), 0), timeout=60, interval=0.02)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    done_before = await inbound_count(pool)
    assert 0 < done_before < total, "the kill should land mid-ingestion"
    spawn(env)  # type: ignore[operator]
    await wait_for(lambda: _eq(inbound_count(pool), total), timeout=90)
    assert await pool.fetchval(
        "SELECT count(DISTINCT rfc_message_id) FROM messages WHERE direction = 'inbound'") == total
    assert await pool.fetchval("SELECT count(*) FROM events WHERE type = 'reply.received'") == total
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE routing_key = 'reply.received'") == total
    assert await pool.fetchval("SELECT unread_count FROM conversations WHERE id = $1",
                               lab.conversation_id) == total


async def _gt(value: object, floor: int) -> bool:
    return (await value) > floor  # type: ignore[misc,operator]


async def test_two_pollers_split_mailboxes_and_take_over(
    pool: asyncpg.Pool, settings: Settings, vault: Vault, lab: Lab, append: Appender, spawn: object
) -> None:
    labs = [lab, *[await make_lab(pool, vault) for _ in range(3)]]
    env = _env(settings, lab.folder, lease=2.0)
    a = spawn(env)  # type: ignore[operator]
    spawn(env)  # type: ignore[operator]

    async def split() -> bool:
        rows = await pool.fetch("SELECT owner, count(*) AS n FROM mailbox_leases"
                                " WHERE expires_at > now() GROUP BY owner")
        return sorted(r["n"] for r in rows) == [2, 2]

    await wait_for(split, timeout=30)
    owners = {r["mailbox_id"]: r["owner"] for r in await pool.fetch("SELECT * FROM mailbox_leases")}
    assert len(set(owners.values())) == 2 and set(owners) == {x.mailbox_id for x in labs}
    await append(lab.folder, make_mail(sender=lab.lead, to=lab.mailbox_email, body="one"))
    for x in labs:
        await wait_for(lambda x=x: _eq(inbound_count(pool, x.mailbox_id), 1), timeout=30)
    a_owner = next(o for o in owners.values() if f":{a.pid}:" in o)
    a.send_signal(signal.SIGKILL)
    a.wait(timeout=10)
    await append(lab.folder, make_mail(sender=lab.lead, to=lab.mailbox_email, body="two"))
    # The survivor takes the dead poller's mailboxes after their leases expire.
    for x in labs:
        await wait_for(lambda x=x: _eq(inbound_count(pool, x.mailbox_id), 2), timeout=30)
    rows = await pool.fetch("SELECT owner FROM mailbox_leases WHERE expires_at > now()")
    assert len(rows) == 4 and a_owner not in {r["owner"] for r in rows}
    assert await inbound_count(pool) == 8
    assert sys.platform.startswith("linux")
