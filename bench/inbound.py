"""Inbound benchmark: messages/s ingested (fetch, parse, thread, persist, publish) from Dovecot,
next to raw aioimaplib `UID FETCH … BODY.PEEK[]` of the same messages in the same run.

    .venv/bin/python -m bench.inbound [-n 2000] [--runs 3]

Loopback only: the mail lab (127.0.0.1:1143), PostgreSQL and RabbitMQ as in the tests. Each
run ingests into a fresh mailbox row of a throw-away database, so nothing is de-duplicated away.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from consumers.runner import close_context, open_context
from gateway.bus.topology import Topology
from gateway.config import Settings
from gateway.inbound.ingest import Ingestor, MailboxRef
from gateway.inbound.session import ImapSession
from gateway.inbound.watcher import BATCH, ingest_uids
from gateway.logging import configure
from gateway.runtime import tune_gc
from gateway.storage import DirectoryStorage
from tests.integration.inbound.conftest import make_lab, make_mail
from tests.support.mailserver import ensure_lab, imap_login
from tests.support.services import (
    AMQP_URL,
    create_test_database,
    drop_test_database,
    dsn_for,
    ensure_template,
)

USER = "gateway@example.test"


async def raw_fetch(folder: str) -> tuple[int, float, float]:
    """(messages, seconds, CPU seconds of this process) of fetching the folder raw."""
    session = await ImapSession.open("127.0.0.1", 1143, "none", USER, "secret")
    try:
        await session.select(folder)
        cpu, started = time.process_time(), time.perf_counter()
        uids = await session.uids_above(0)
        count = 0
        for i in range(0, len(uids), BATCH):
            count += len(await session.fetch(uids[i:i + BATCH]))
        return count, time.perf_counter() - started, time.process_time() - cpu
    finally:
        await session.close()


def machine_cpu() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores so far, from /proc/stat (0, 0 where unavailable)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


async def ingest(ingestor: Ingestor, mailbox: MailboxRef, folder: str) -> tuple[int, float, float]:
    """(messages, seconds, CPU seconds of this process) of ingesting the folder; prints how
    busy the whole machine (PostgreSQL, RabbitMQ and Dovecot included) was meanwhile."""
    session = await ImapSession.open("127.0.0.1", 1143, "none", USER, "secret")
    try:
        state = await session.select(folder)
        cpu, started, machine = time.process_time(), time.perf_counter(), machine_cpu()
        uids = await session.uids_above(0)
        # The watcher's own catch-up path (fetch one batch ahead while ingesting).
        last = await ingest_uids(session, ingestor, mailbox, folder, state.uidvalidity, uids)
        secs, cpu = time.perf_counter() - started, time.process_time() - cpu
        busy, total = (after - before for after, before in zip(machine_cpu(), machine, strict=True))
        if total:
            print(f"  machine CPU busy during ingest: {busy / total:.0%} of {os.cpu_count()} cores,"
                  f" this process {cpu / secs:.0%} of one core")
        count = await ingestor.pool.fetchval(
            "SELECT count(*) FROM messages WHERE mailbox_id = $1 AND direction = 'inbound'", mailbox.id)
        assert last == uids[-1]
        return int(count), secs, cpu
    finally:
        await session.close()


async def main(n: int, runs: int) -> int:
    configure(level="warning")  # no per-batch log lines in the figures
    ensure_lab()
    db_name = await create_test_database(await ensure_template())
    folder = f"Bench{secrets.token_hex(4)}"
    tmp = Path(tempfile.mkdtemp(prefix="mailgw-bench-"))
    settings = Settings(database_url=dsn_for(db_name), amqp_url=AMQP_URL,
                        amqp_prefix=f"bench{secrets.token_hex(3)}.", data_dir=tmp,
                        secret_key="bench-secret-key", log_format="json", log_level="warning")
    ctx = await open_context(settings, "bench-inbound")
    tune_gc()  # as `mailgw worker poller` does once started; both phases run with it
    client = await imap_login(USER)
    try:
        await client.create(folder)
        lab = await make_lab(ctx.pool, ctx.vault)
        for i in range(n):  # ~3 KB replies threaded by In-Reply-To
            raw = make_mail(sender=lab.lead, to=USER, in_reply_to=lab.sent_rfc_id,
                            body=f"Reply {i}.\n\n" + "Quoted history line.\n" * 120)
            await client.append(raw, mailbox=folder)
        raw_rates: list[float] = []
        ingest_rates: list[float] = []
        raw_cpu: list[float] = []
        ingest_cpu: list[float] = []
        for run in range(runs):
            count, secs, cpu = await raw_fetch(folder)
            raw_rates.append(count / secs)
            raw_cpu.append(cpu / count * 1000)
            lab_run = await make_lab(ctx.pool, ctx.vault)
            # The same conversation's Message-ID in this run's workspace: replies thread onto it.
            await ctx.pool.execute("UPDATE messages SET rfc_message_id = $1 WHERE id = $2",
                                   lab.sent_rfc_id, lab_run.sent_message_id)
            ingestor = Ingestor(ctx.pool, DirectoryStorage(settings.attachments_path), settings.public_url,
                                ctx.publisher)
            ref = MailboxRef(lab_run.mailbox_id, lab_run.workspace_id, USER)
            got, secs, cpu = await ingest(ingestor, ref, folder)
            if got != n:
                print(f"run {run}: ingested {got} of {n}", file=sys.stderr)
                return 1
            ingest_rates.append(got / secs)
            ingest_cpu.append(cpu / got * 1000)
            print(f"run {run + 1}: raw {raw_rates[-1]:.0f} msg/s ({raw_cpu[-1]:.3f} ms CPU/msg),"
                  f" ingest {ingest_rates[-1]:.0f} msg/s ({ingest_cpu[-1]:.3f} ms CPU/msg)")
        raw_m, ing_m = statistics.median(raw_rates), statistics.median(ingest_rates)
        print(f"messages: {n}, runs: {runs}")
        print(f"raw aioimaplib UID FETCH BODY.PEEK[] (median): {raw_m:.0f} msg/s")
        print(f"ingest fetch+parse+thread+persist+publish (median): {ing_m:.0f} msg/s")
        print(f"ratio: {ing_m / raw_m:.1%} (target >= 20%)")
        print(f"gateway process CPU per message (median): raw {statistics.median(raw_cpu):.3f} ms,"
              f" ingest {statistics.median(ingest_cpu):.3f} ms")
        return 0
    finally:
        await client.delete(folder)
        await client.logout()
        channel = await ctx.amqp.channel()
        await Topology(settings).delete(channel)
        await close_context(ctx)
        await drop_test_database(db_name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    # 2000 by default: a 500-message raw phase lasts ~40 ms, so one scheduling hiccup moved a
    # run's figure by half (docs/performance.md, "Inbound", round 3).
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(min(args.n, 5000), min(args.runs, 10))))
