"""Benchmark (issue 3, item 10 b): deliver tasks → delivery role → SMTP sink, vs raw aiosmtplib.

    .venv/bin/python bench/send_delivery.py [--messages 2000] [--runs 3] [--connections 8]

Stages N messages with their deliver tasks (as the router would), publishes the tasks, and
times the real delivery role until every message is `sent`. Beside it, raw aiosmtplib sends of
a message of the same size to the same sink over the same number of connections. The sink is
a minimal aiosmtpd handler in its own process on 127.0.0.1. Prints the medians and the ratio.
Needs PostgreSQL and RabbitMQ on loopback (the test services); uses a throwaway database and
AMQP prefix, removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiosmtplib
import orjson

from bench._common import median_ratio, throwaway_context
from consumers import delivery
from gateway import outbox
from gateway.bus.topology import DELIVER_KEY, DELIVERY
from gateway.ids import new_id
from gateway.mail.build import OutgoingMessage, render
from gateway.mail.threading import new_message_id
from tests.support import factories

SINK = """
import asyncio, sys
from aiosmtpd.controller import Controller
class H:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 OK"
c = Controller(H(), hostname="127.0.0.1", port=0 or int(sys.argv[1]))
c.start()
print("ready", flush=True)
sys.stdin.read()
c.stop()
"""
TEXT = "Hi there,\n\nThis is a short benchmark message of ordinary size.\n\nBest,\nAlice\n" * 3


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def raw_run(port: int, n: int, conns: int, data: bytes) -> float:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        while not queue.empty():
            queue.get_nowait()
            await client.sendmail("alice@example.test", ["bob@example.test"], data)
        await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    return n / (time.perf_counter() - started)


async def stage(pool: object, w: dict[str, str], n: int) -> list[int]:
    import asyncpg

    assert isinstance(pool, asyncpg.Pool)
    ids = []
    async with pool.acquire() as conn, conn.transaction():
        rows = []
        for _ in range(n):
            conv, msg = new_id("conv"), new_id("msg")
            rows.append((conv, msg, new_message_id("example.test")))
        await conn.executemany(
            "INSERT INTO conversations (id, workspace_id, identity_id, mailbox_id, lead_id, lead_email,"
            " subject) VALUES ($1, $2, $3, $4, $5, 'bob@example.test', 'Benchmark')",
            [(c, w["ws"], w["idn"], w["mbx"], new_id("lead")) for c, _, _ in rows],
        )
        await conn.executemany(
            "INSERT INTO messages (id, conversation_id, workspace_id, mailbox_id, type, direction,"
            " rfc_message_id, from_email, from_name, to_emails, subject, text_body, status)"
            " VALUES ($1, $2, $3, $4, 'sent', 'outbound', $5, 'alice@example.test', 'Alice',"
            " '{bob@example.test}', 'Benchmark', $6, 'queued')",
            [(m, c, w["ws"], w["mbx"], r, TEXT) for c, m, r in rows],
        )
        c = cast(asyncpg.Connection, conn)
        for _, m, _ in rows:
            ids.append(await outbox.stage(c, DELIVERY, DELIVER_KEY, orjson.dumps({"messageId": m}),
                                          message_id=f"deliver:{m}"))
    return ids


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=8)
    args = ap.parse_args()
    n, conns = args.messages, args.connections

    port = free_port()
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(port)], stdin=subprocess.PIPE,  # noqa: ASYNC220
                            stdout=subprocess.PIPE, text=True)
    assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
    try:
        async with throwaway_context(smtp_connections_per_mailbox=conns) as ctx:
            t = await factories.tenant(ctx.pool)
            mbx = await factories.mailbox(ctx.pool, ctx.vault, t.workspace_id, "alice@example.test",
                                          smtp_port=port, username=None, password="x", imap_port=None)
            await ctx.pool.execute("UPDATE mailboxes SET smtp_password_enc = NULL, smtp = smtp - 'username'"
                                   " WHERE id = $1", mbx)
            idn = await factories.identity(ctx.pool, t.workspace_id, "bench@example.com", [mbx])
            w = {"ws": t.workspace_id, "mbx": mbx, "idn": idn}
            data = render(OutgoingMessage(
                from_email="alice@example.test", from_name="Alice", to=["bob@example.test"],
                subject="Benchmark", message_id=new_message_id("example.test"), text=TEXT))

            raw_rates, pipe_rates, raw_cpu, pipe_cpu = [], [], [], []
            for run in range(args.runs):
                cpu = time.process_time()
                raw_rates.append(await raw_run(port, n, conns, data))
                raw_cpu.append((time.process_time() - cpu) / n * 1e6)
                ids = await stage(ctx.pool, w, n)
                await outbox.publish_rows(ctx.pool, ctx.publisher, ids)  # tasks wait in the queue
                stop = asyncio.Event()
                cpu = time.process_time()
                started = time.perf_counter()
                task = asyncio.create_task(delivery.run(ctx, stop))
                for _ in range(int(600 / 0.05)):
                    sent = await ctx.pool.fetchval("SELECT count(*) FROM messages WHERE status = 'sent'")
                    if sent >= n * (run + 1):
                        break
                    await asyncio.sleep(0.05)
                elapsed = time.perf_counter() - started
                stop.set()
                await task
                pipe_cpu.append((time.process_time() - cpu) / n * 1e6)
                pipe_rates.append(n / elapsed)
                print(f"run {run + 1}: raw {raw_rates[-1]:.0f} msg/s ({raw_cpu[-1]:.0f} us CPU/msg), "
                      f"delivery {pipe_rates[-1]:.0f} msg/s ({pipe_cpu[-1]:.0f} us CPU/msg in this process), "
                      f"ratio {pipe_rates[-1] / raw_rates[-1]:.1%}", flush=True)
            # Nothing lost, nothing recorded twice: one email.sent event and one count per message.
            events = await ctx.pool.fetchval("SELECT count(*) FROM events WHERE type = 'email.sent'")
            total = await ctx.pool.fetchval("SELECT sent_total FROM mailboxes WHERE id = $1", mbx)
            assert events == total == n * args.runs, (events, total)
            raw, pipe = statistics.median(raw_rates), statistics.median(pipe_rates)
            print(f"raw aiosmtplib ({conns} connections): median {raw:.0f} msg/s")
            print(f"delivery role end-to-end ({conns} connections): median {pipe:.0f} msg/s")
            print(f"ratio delivery/raw: {pipe / raw:.1%} (median of per-run ratios "
                  f"{median_ratio(pipe_rates, raw_rates):.1%})")
            print(f"client-process CPU per message: raw {statistics.median(raw_cpu):.0f} us, "
                  f"delivery {statistics.median(pipe_cpu):.0f} us")
    finally:
        assert sink.stdin is not None
        sink.stdin.close()
        sink.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(main())
