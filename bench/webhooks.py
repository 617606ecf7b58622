"""Benchmark (issue 6, item 10): events → broker → dispatcher → signed POSTs, vs raw aiohttp POSTs.

    .venv/bin/python bench/webhooks.py [--events 2000] [--runs 3] [--concurrency 16]
    .venv/bin/python bench/webhooks.py --runs 1 --events 20000 --profile /tmp/dispatcher.txt

`--profile FILE` samples this process with py-spy (raw collapsed stacks) during the dispatcher
phases only.

Stages N events (as producers do: `events.stage` + outbox) for a workspace with one webhook
endpoint, publishes them to `mailgw.events`, then times the real dispatcher role until every
attempt is recorded `succeeded` in PostgreSQL. Beside it, in the same run, raw aiohttp POSTs
of the same body to the same receiver at the same concurrency, over one session with one
connection per worker (unsigned: no webhook-* headers, no recording; the dispatcher's
requests carry the three signature headers and a User-Agent).
The receiver is a minimal aiohttp app in its own process on 127.0.0.1. Prints medians and
the ratio. Needs PostgreSQL and RabbitMQ on loopback (the test services); uses a throwaway
database and AMQP prefix, removed afterwards.
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import asyncpg
import orjson

from bench._common import median_ratio, throwaway_context
from consumers import dispatcher
from gateway import events, outbox
from gateway.db import webhooks as whdb
from gateway.webhooks import signing
from tests.support import factories

RECEIVER = """
import socket, sys
from aiohttp import web
async def hook(request):
    await request.read()
    return web.Response(text="ok")
app = web.Application()
app.router.add_post("/hook", hook)
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
web.run_app(app, sock=sock, access_log=None, print=None, handle_signals=True)
"""
MAX_WAIT_SECONDS = 600
DATA: dict[str, Any] = {
    "conversationId": "conv_0123456789abcdef", "identity": "alice@example.com",
    "mailbox": {"id": "mbx_0123456789abcdef", "email": "alice@example.test"},
    "messageId": "msg_0123456789abcdef", "rfcMessageId": "<bench.1@example.test>",
    "to": "bob@example.test", "from": "alice@example.test", "subject": "Benchmark", "metadata": {},
}


def cpu_ticks() -> tuple[int, int]:
    """(idle, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)


def idle_since(start: tuple[int, int]) -> float:
    idle, total = cpu_ticks()
    return 100 * (idle - start[0]) / max(1, total - start[1])


async def raw_run(url: str, n: int, concurrency: int, body: bytes) -> float:
    """POSTs of `body` over `concurrency` workers sharing one session: the baseline."""
    left = iter(range(n))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for _ in left:
                async with session.post(url, data=body, allow_redirects=False,
                                        headers={"content-type": "application/json"}) as resp:
                    await resp.read()
                    assert resp.status == 200

        started = time.perf_counter()
        cpu, machine = time.process_time(), cpu_ticks()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
        print(f"  raw client CPU {100 * (time.process_time() - cpu) / wall:.0f}% of wall,"
              f" {1e6 * (time.process_time() - cpu) / n:.0f} µs per POST;"
              f" machine idle {idle_since(machine):.0f}%")
        return n / wall


async def stage_events(pool: asyncpg.Pool, workspace_id: str, n: int) -> list[int]:
    async with pool.acquire() as conn, conn.transaction():
        return [(await events.stage(conn, "email.sent", workspace_id, DATA))[1] for _ in range(n)]


async def start_profiler(path: Path) -> asyncio.subprocess.Process:
    """py-spy on this process (collapsed stacks), from now until `stop_profiler`."""
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "-r", "250",
        "--pid", str(os.getpid()), "-o", str(path), stdout=asyncio.subprocess.DEVNULL)
    await asyncio.sleep(1.0)  # let py-spy attach before the timed phase starts
    return proc


async def stop_profiler(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGINT)
    await proc.wait()


async def dispatcher_run(ctx: Any, n: int, done_before: int) -> float:
    """Times the dispatcher role until all `n` attempts are `succeeded` in PostgreSQL.

    The completion poll reads only the partial index of pending rows (cheap: it must not
    steal PostgreSQL time from the dispatcher it measures); the full count runs only once
    nothing is pending. When the intake finished is read afterwards from the rows' own
    `created_at`, not polled.
    """
    stop = asyncio.Event()
    db_start = await ctx.pool.fetchval("SELECT clock_timestamp()")
    started = time.perf_counter()
    cpu, machine = time.process_time(), cpu_ticks()
    task = asyncio.create_task(dispatcher.run(ctx, stop))
    try:
        for _ in range(int(MAX_WAIT_SECONDS / 0.02)):
            await asyncio.sleep(0.02)  # polling the count: the condition is checked every round
            if await ctx.pool.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM webhook_deliveries WHERE status = 'pending')"):
                continue
            if await ctx.pool.fetchval(
                    "SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'") >= done_before + n:
                break
        else:
            raise TimeoutError("the dispatcher did not finish in time")
        wall = time.perf_counter() - started
        used = time.process_time() - cpu
        idle = idle_since(machine)
        intake = await ctx.pool.fetchval(
            "SELECT EXTRACT(EPOCH FROM max(created_at) - $1)::float8 FROM webhook_deliveries", db_start)
        print(f"  dispatcher process CPU {100 * used / wall:.0f}% of wall, {1e6 * used / n:.0f} µs per"
              f" delivery; machine idle {idle:.0f}%;"
              f" all events recorded as attempts after ~{intake or wall:.2f}s of {wall:.2f}s")
        return n / wall
    finally:
        stop.set()
        await task


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--profile", type=Path, help="py-spy collapsed stacks of the dispatcher phases")
    args = ap.parse_args()
    n, conc = args.events, args.concurrency

    receiver = subprocess.Popen(  # noqa: ASYNC220 - start-up, before anything is timed
        [sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    assert receiver.stdout is not None
    url = f"http://127.0.0.1:{int(receiver.stdout.readline())}/hook"
    try:
        async with throwaway_context(
            webhooks_allow_private=True, webhook_concurrency=max(64, conc),
            webhook_concurrency_per_endpoint=conc,
        ) as ctx:
            t = await factories.tenant(ctx.pool)
            await whdb.create_endpoint(
                ctx.pool, workspace_id=t.workspace_id, url=url, events=["*"], description="bench",
                enabled=True, secret_enc=ctx.vault.encrypt(signing.new_secret()),
            )
            body = orjson.dumps(events.make_event("email.sent", t.workspace_id, DATA))
            raw_rates, hook_rates = [], []
            for run in range(args.runs):
                raw_rates.append(await raw_run(url, n, conc, body))
                ids = await stage_events(ctx.pool, t.workspace_id, n)
                await outbox.publish_rows(ctx.pool, ctx.publisher, ids)  # events wait in the queue
                profiler = await start_profiler(
                    args.profile.with_suffix(f".{run + 1}.txt")) if args.profile else None
                try:
                    hook_rates.append(await dispatcher_run(ctx, n, n * run))
                finally:
                    if profiler is not None:
                        await stop_profiler(profiler)
                print(f"run {run + 1}: raw {raw_rates[-1]:.0f} POST/s, dispatcher {hook_rates[-1]:.0f} "
                      f"deliveries/s", flush=True)
            raw, hook = statistics.median(raw_rates), statistics.median(hook_rates)
            print(f"raw aiohttp POST (concurrency {conc}): median {raw:.0f}/s")
            print(f"dispatcher end-to-end (signed, recorded; concurrency {conc}): median {hook:.0f}/s")
            print(f"ratio of medians dispatcher/raw: {hook / raw:.1%}; "
                  f"median of per-run ratios: {median_ratio(hook_rates, raw_rates):.1%}")
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(main())
