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
import os
import signal
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
from gateway.bus.topology import DELIVER_KEY, DELIVERY, DISPATCHER
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


def cpu_by_process(sink_pid: int) -> dict[str, float]:
    """CPU seconds used so far by this process, the sink, PostgreSQL and RabbitMQ (from /proc).

    The machine is shared, so only the phase's difference is read, and only as an indication
    of where the whole system's time per message goes (the two cores are the budget)."""
    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    out = {"bench": 0.0, "sink": 0.0, "postgres": 0.0, "rabbitmq": 0.0, "machine": 0.0}
    with open("/proc/stat") as f:  # all CPUs, busy = everything but idle and iowait
        ticks = [int(x) for x in f.readline().split()[1:]]
    out["machine"] = (sum(ticks) - ticks[3] - ticks[4]) / tick
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        pid = int(entry.name)
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        used = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        key = ("bench" if pid == me else "sink" if pid == sink_pid else
               "postgres" if comm.startswith("postgres") else
               "rabbitmq" if comm.startswith(("beam", "erl_child", "epmd")) else None)
        if key is not None:
            out[key] += used
    return out


def cpu_line(before: dict[str, float], after: dict[str, float], n: int) -> str:
    return ", ".join(f"{k} {(after[k] - before[k]) / n * 1e6:.0f}" for k in before)


def profile_start(directory: Path | None, run: int) -> subprocess.Popen[bytes] | None:
    """py-spy on this process for the delivery phase only (the raw loop is not in it)."""
    if directory is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(spy), "record", "--format", "raw", "--rate", "250",
                             "--pid", str(os.getpid()), "-o", str(directory / f"delivery-{run + 1}.txt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_stop(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        spy.wait(timeout=30)


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
    ap.add_argument("--profile", type=Path,
                    help="directory for py-spy profiles (collapsed stacks) of each delivery phase")
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
                cpu, procs = time.process_time(), cpu_by_process(sink.pid)
                raw_rates.append(await raw_run(port, n, conns, data))
                raw_cpu.append((time.process_time() - cpu) / n * 1e6)
                raw_procs = cpu_line(procs, cpu_by_process(sink.pid), n)
                ids = await stage(ctx.pool, w, n)
                await outbox.publish_rows(ctx.pool, ctx.publisher, ids)  # tasks wait in the queue
                stop = asyncio.Event()
                spy = profile_start(args.profile, run)
                cpu, procs = time.process_time(), cpu_by_process(sink.pid)
                started = time.perf_counter()
                task = asyncio.create_task(delivery.run(ctx, stop))
                for _ in range(int(600 / 0.05)):
                    # One row, committed with each success (a count(*) of messages every 50 ms
                    # would take PostgreSQL time from the role being measured).
                    sent = await ctx.pool.fetchval("SELECT sent_total FROM mailboxes WHERE id = $1", mbx)
                    if sent >= n * (run + 1):
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise SystemExit(f"run {run + 1}: only {sent} of {n * (run + 1)} sent after 600 s")
                elapsed = time.perf_counter() - started
                profile_stop(spy)
                stop.set()
                await task
                pipe_cpu.append((time.process_time() - cpu) / n * 1e6)
                pipe_procs = cpu_line(procs, cpu_by_process(sink.pid), n)
                pipe_rates.append(n / elapsed)
                print(f"run {run + 1}: raw {raw_rates[-1]:.0f} msg/s ({raw_cpu[-1]:.0f} us CPU/msg), "
                      f"delivery {pipe_rates[-1]:.0f} msg/s ({pipe_cpu[-1]:.0f} us CPU/msg in this process), "
                      f"ratio {pipe_rates[-1] / raw_rates[-1]:.1%}", flush=True)
                print(f"  CPU us/msg by process: raw phase: {raw_procs}; delivery phase: {pipe_procs}",
                      flush=True)
            # Nothing lost, nothing recorded twice: one email.sent event and one count per message.
            events = await ctx.pool.fetchval("SELECT count(*) FROM events WHERE type = 'email.sent'")
            total = await ctx.pool.fetchval("SELECT sent_total FROM mailboxes WHERE id = $1", mbx)
            assert events == total == n * args.runs, (events, total)
            # ... and each event reached the broker (the dispatcher's queue has no consumer here).
            channel = await ctx.amqp.channel()
            queued = await channel.declare_queue(ctx.topology.name(DISPATCHER), passive=True)
            await channel.close()
            assert queued.declaration_result.message_count == n * args.runs, queued.declaration_result
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
