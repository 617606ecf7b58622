"""Benchmark (issue 3, item 10): the send path, next to raw broker baselines measured in the same run.

    .venv/bin/python bench/send.py [--requests 1500] [--runs 3] [--concurrency 1,8,32] [--sections a,b]

Section (a): HTTP sends accepted per second with p50/p99 latency at a few concurrencies
(closed loop), then an open-loop run at half the peak rate (its p99 is the latency target),
against `mailgw api` and `mailgw worker router` in their own processes on 127.0.0.1, a real
broker and a throwaway database (dropped afterwards). Beside it, the raw aio-pika
publish-with-confirms rate (persistent messages to a quorum queue, a window of 64 in flight),
measured in alternation with the HTTP runs so both see the same background load, the ratio
of the two, and the CPU time the api and router processes spend per accepted send (the
figure least disturbed by other load on the machine). Every figure is the median of
`--runs` runs. `--profile DIR` runs both processes under py-spy (collapsed stacks) and skips the
open loop, so the stacks show the closed-loop (peak) work.

Section (b): delivered per second into a local SMTP sink by the delivery role (from queued
deliver tasks: claim, MIME, SMTP, record, `email.sent`, ack) next to raw aiosmtplib to the same
sink over the same 8 connections; it lives in bench/send_delivery.py and runs as its own
process. By default both sections run (`--sections a,b`; `--messages` per run for b).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aio_pika  # noqa: E402
import aiohttp  # noqa: E402
import orjson  # noqa: E402

from gateway.config import Settings  # noqa: E402
from gateway.crypto import Vault  # noqa: E402
from gateway.db.pool import create_pool  # noqa: E402
from tests.support import factories  # noqa: E402
from tests.support.services import (  # noqa: E402
    AMQP_URL,
    create_test_database,
    drop_test_database,
    dsn_for,
    ensure_template,
)

WINDOW = 64
BODY = {"subject": "Quarterly numbers", "text": "Hi,\n\nA short message of ordinary size.\n\nBest,\nAlice\n"}


@dataclass
class Run:
    rate: float
    p50_ms: float
    p99_ms: float


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def raw_publish(n: int, size: int) -> float:
    """Raw aio-pika: persistent publishes with confirms, WINDOW in flight, to a quorum queue."""
    conn = await aio_pika.connect(AMQP_URL)
    try:
        channel = await conn.channel(publisher_confirms=True)
        name = f"bench.raw.{secrets.token_hex(4)}"
        await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        body = b"x" * size
        window = asyncio.Semaphore(WINDOW)

        async def one() -> None:
            async with window:
                await channel.default_exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), name
                )

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        elapsed = time.perf_counter() - started
        await channel.queue_delete(name)
        return n / elapsed
    finally:
        await conn.close()


def encode_body(i: int, tag: str) -> bytes:
    """The JSON body of request i (orjson: the load generator shares the cores, so it should
    spend as little as a client reasonably can)."""
    return orjson.dumps({**BODY, "to": f"lead{i}.{tag}@northwind.example"})


async def closed_loop(urls: list[str], headers: dict[str, str], n: int, concurrency: int, tag: str) -> Run:
    latencies: list[float] = []
    accepted = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        counter = iter(range(n))

        async def worker() -> None:
            nonlocal accepted
            for i in counter:
                body = encode_body(i, tag)
                t0 = time.perf_counter()
                async with session.post(urls[i % len(urls)], data=body, headers=headers) as resp:
                    await resp.read()
                    accepted += resp.status == 202
                latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    if accepted != n:
        raise RuntimeError(f"only {accepted} of {n} sends were accepted")
    return Run(accepted / elapsed, pct(latencies, 0.5), pct(latencies, 0.99))


async def open_loop(urls: list[str], headers: dict[str, str], n: int, rate: float, tag: str) -> Run:
    """Requests started on a fixed schedule (`rate` per second), whatever the latency."""
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(i: int, at: float) -> None:
            await asyncio.sleep(max(at - time.perf_counter(), 0))
            body = encode_body(i, tag)
            t0 = time.perf_counter()
            async with session.post(urls[i % len(urls)], data=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 202:
                    raise RuntimeError(f"send answered {resp.status}")
            latencies.append(time.perf_counter() - t0)

        start = time.perf_counter() + 0.05
        started = time.perf_counter()
        await asyncio.gather(*(one(i, start + i / rate) for i in range(n)))
        elapsed = time.perf_counter() - started
    return Run(n / elapsed, pct(latencies, 0.5), pct(latencies, 0.99))


PROFILE_DIR: Path | None = None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service_cpu_seconds() -> dict[str, float]:
    """CPU time so far of PostgreSQL (all its processes) and RabbitMQ (beam.smp), to report the
    work each send causes there too (they share the cores with everything else)."""
    totals = {"postgres": 0.0, "rabbitmq": 0.0}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            comm = (proc / "comm").read_text().strip()
            if comm in ("postgres", "beam.smp"):
                totals["postgres" if comm == "postgres" else "rabbitmq"] += cpu_seconds(int(proc.name))
        except (OSError, ValueError):
            continue  # the process ended meanwhile
    return totals


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    exe = str(Path(sys.executable).parent / "mailgw")
    cmd = [exe, *args]
    if PROFILE_DIR is not None:  # py-spy (pip install py-spy): collapsed stacks per process
        out = PROFILE_DIR / f"{'-'.join(args)}.txt"
        cmd = [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "-r", "200",
               "-o", str(out), "--", *cmd]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


async def wait_ready(url: str, attempts: int = 200) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(attempts):
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


async def section_a(requests: int, runs: int, concurrencies: list[int], identities: int = 1) -> None:
    template = await ensure_template()
    dbname = await create_test_database(template)
    prefix = f"bench{secrets.token_hex(3)}."
    port = free_port()
    settings = Settings(database_url=dsn_for(dbname), amqp_url=AMQP_URL, amqp_prefix=prefix,
                        secret_key="bench-secret-key")
    env = dict(os.environ)
    env.update({"MAILGW_DATABASE_URL": settings.database_url, "MAILGW_AMQP_URL": AMQP_URL,
                "MAILGW_AMQP_PREFIX": prefix, "MAILGW_SECRET_KEY": "bench-secret-key",
                "MAILGW_HTTP_PORT": str(port), "MAILGW_LOG_LEVEL": "warning",
                "MAILGW_LOG_FORMAT": "json"})
    procs: list[subprocess.Popen[bytes]] = []
    pool = await create_pool(settings.database_url, max_size=2)
    try:
        t = await factories.tenant(pool)
        vault = Vault(settings.secret_keys())
        mbxs = [await factories.mailbox(pool, vault, t.workspace_id, f"s{i}@tryacme.example",
                                        daily_cap=10**9) for i in range(3)]
        handles = [f"alice{i}@example.com" for i in range(identities)]
        for handle in handles:
            await factories.identity(pool, t.workspace_id, handle, mbxs, daily_cap=10**9)
        procs.append(spawn(["api"], env))
        procs.append(spawn(["worker", "router"], env))
        base = f"http://127.0.0.1:{port}"
        await wait_ready(f"{base}/readyz")
        headers = {**t.headers, "Content-Type": "application/json"}
        url = [f"{base}/v1/identities/{h}/send" for h in handles]
        await closed_loop(url, headers, 200, 8, "warmup")
        size = len(encode_body(0, "raw"))
        # Raw and HTTP runs alternate so both see the same background load.
        raw: list[float] = []
        closed: dict[int, list[Run]] = {c: [] for c in concurrencies}
        cpu_ms: dict[str, list[float]] = {
            "api": [], "router": [], "postgres": [], "rabbitmq": [], "load generator": []}
        for r in range(runs):
            raw.append(await raw_publish(requests * 2, size))
            for c in concurrencies:
                before = [cpu_seconds(p.pid) for p in procs]
                services, own = service_cpu_seconds(), cpu_seconds(os.getpid())
                closed[c].append(await closed_loop(url, headers, requests, c, f"c{c}r{r}"))
                for name, p, b in zip(("api", "router"), procs, before, strict=True):
                    cpu_ms[name].append((cpu_seconds(p.pid) - b) * 1000 / requests)
                for name, b in services.items():
                    cpu_ms[name].append((service_cpu_seconds()[name] - b) * 1000 / requests)
                cpu_ms["load generator"].append((cpu_seconds(os.getpid()) - own) * 1000 / requests)
        raw_rate = statistics.median(raw)
        print(f"raw aio-pika publish+confirm (window {WINDOW}): {raw_rate:8.0f} msg/s"
              f"  (runs: {', '.join(f'{x:.0f}' for x in raw)})")
        peak = 0.0
        for c, results in closed.items():
            rate = statistics.median(r.rate for r in results)
            p50 = statistics.median(r.p50_ms for r in results)
            p99 = statistics.median(r.p99_ms for r in results)
            peak = max(peak, rate)
            print(f"HTTP send, concurrency {c:3d}: {rate:7.0f} accepted/s  p50 {p50:6.1f} ms"
                  f"  p99 {p99:6.1f} ms  ratio to raw {rate / raw_rate:6.1%}")
        if PROFILE_DIR is None:  # over all concurrencies; postgres/rabbitmq include other load
            print("CPU per accepted send: " + ", ".join(
                f"{k} {statistics.median(v):.2f} ms" for k, v in cpu_ms.items()))
        if PROFILE_DIR is not None:  # profiles: the closed loops only (the peak's cost)
            return
        half = [await open_loop(url, headers, requests, peak / 2, f"half{r}") for r in range(runs)]
        print(f"HTTP send, open loop at {peak / 2:.0f}/s (half peak): "
              f"p50 {statistics.median(r.p50_ms for r in half):6.1f} ms"
              f"  p99 {statistics.median(r.p99_ms for r in half):6.1f} ms  (target p99 <= 50 ms)")
        print(f"peak ratio (a) = {peak:.0f} / {raw_rate:.0f} = {peak / raw_rate:.1%} (target >= 12%)")
    finally:
        for p in procs:
            p.send_signal(2 if PROFILE_DIR is not None else 15)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        await pool.close()
        conn = await aio_pika.connect(AMQP_URL)
        try:
            from gateway.bus.topology import Topology

            await Topology(settings).delete(await conn.channel())
        finally:
            await conn.close()
        await drop_test_database(dbname)


def section_b(runs: int, messages: int) -> None:
    """Delivery vs raw SMTP: owned by bench/send_delivery.py (run as its own process)."""
    subprocess.run([sys.executable, str(ROOT / "bench" / "send_delivery.py"),
                    "--runs", str(runs), "--messages", str(messages)], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--sections", default="a,b")
    parser.add_argument("--messages", type=int, default=1500, help="messages per run in section b")
    parser.add_argument("--identities", type=int, default=1,
                        help="spread sends over this many identities (each identity's cap row"
                             " serializes its sends: one commit at a time)")
    parser.add_argument("--profile", type=Path, help="directory for py-spy profiles of api and router")
    args = parser.parse_args()
    global PROFILE_DIR
    PROFILE_DIR = args.profile
    sections = {s.strip() for s in args.sections.split(",")}
    if "a" in sections:
        conc = [int(c) for c in args.concurrency.split(",")]
        asyncio.run(section_a(args.requests, args.runs, conc, args.identities))
    if "b" in sections:
        section_b(args.runs, args.messages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
