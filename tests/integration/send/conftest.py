"""Send fixtures: a tenant with a pool, the router in-process or as `mailgw worker router`."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import asyncpg
import pytest

from consumers import router as router_role
from consumers.runner import close_context, open_context
from gateway.bus.topology import COMMANDS, Topology
from gateway.config import Settings
from gateway.crypto import Vault
from tests.support import factories
from tests.support.processes import role_env
from tests.support.services import AMQP_URL

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class World:
    tenant: factories.Tenant
    identity_id: str
    handle: str
    mailboxes: list[str]

    @property
    def url(self) -> str:
        return f"/v1/identities/{self.handle}/send"


async def make_world(
    pool: asyncpg.Pool,
    settings: Settings,
    *,
    identity_cap: int = 1000,
    mailbox_caps: tuple[int, ...] = (1000, 1000),
    timezone: str = "UTC",
) -> World:
    vault = Vault(settings.secret_keys())
    t = await factories.tenant(pool)
    mbxs = [
        await factories.mailbox(pool, vault, t.workspace_id, f"sender{i}@tryacme.example", daily_cap=cap,
                                from_name=f"Sender {i}")
        for i, cap in enumerate(mailbox_caps)
    ]
    handle = "alice.acme@example.com"
    idn = await factories.identity(pool, t.workspace_id, handle, mbxs, daily_cap=identity_cap,
                                   timezone=timezone, display_name="Alice")
    return World(t, idn, handle, mbxs)


@pytest.fixture
async def world(pool: asyncpg.Pool, settings: Settings) -> World:
    return await make_world(pool, settings)


class RouterControl:
    """Start and stop an in-process router (the role's own `run`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ctx = await open_context(self.settings, "router-test")
        self._stop = asyncio.Event()
        stop = self._stop

        async def main() -> None:
            try:
                await router_role.run(ctx, stop)
            finally:
                await close_context(ctx)

        self._task = asyncio.create_task(main())
        await wait_consumers(self.settings, 1)

    async def stop(self) -> None:
        if self._stop is not None and self._task is not None:
            self._stop.set()
            await self._task
            self._task = None


async def consumer_count(settings: Settings) -> int:
    conn = await aio_pika.connect(AMQP_URL)
    try:
        channel = await conn.channel()
        q = await channel.declare_queue(Topology(settings).name(COMMANDS), passive=True)
        count = q.declaration_result.consumer_count
        return int(count or 0)
    finally:
        await conn.close()


async def wait_consumers(settings: Settings, n: int, attempts: int = 300) -> None:
    """Wait (bounded) until the commands queue has at least `n` consumers."""
    for _ in range(attempts):
        try:
            if await consumer_count(settings) >= n:
                return
        except aio_pika.exceptions.ChannelClosed:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"router consumers did not reach {n}")


@pytest.fixture
async def router_ctl(settings: Settings) -> AsyncIterator[RouterControl]:
    ctl = RouterControl(settings)
    yield ctl
    await ctl.stop()


@pytest.fixture
async def router(router_ctl: RouterControl) -> RouterControl:
    await router_ctl.start()
    return router_ctl


def worker_env(settings: Settings) -> dict[str, str]:
    return role_env(settings, MAILGW_LOG_LEVEL="warning", MAILGW_DB_POOL_SIZE="8")


@pytest.fixture
async def router_processes(settings: Settings) -> AsyncIterator[Callable[[int], Awaitable[None]]]:
    """Start `n` × `mailgw worker router` (own processes, own pools); stopped with SIGTERM."""
    procs: list[asyncio.subprocess.Process] = []

    async def start(n: int) -> None:
        exe = str(Path(sys.executable).parent / "mailgw")
        for _ in range(n):
            procs.append(await asyncio.create_subprocess_exec(
                exe, "worker", "router", env=worker_env(settings), cwd=ROOT,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            ))
        await wait_consumers(settings, n)

    yield start
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            await asyncio.wait_for(p.wait(), 20)
        except TimeoutError:
            p.kill()
            await p.wait()
