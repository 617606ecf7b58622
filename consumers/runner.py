"""Runs roles: shared resources (pool, broker, publisher) in a typed context, clean shutdown."""

from __future__ import annotations

import asyncio
import importlib
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aio_pika.abc import AbstractRobustConnection

from gateway.bus.publisher import Publisher
from gateway.bus.topology import Topology, connect
from gateway.config import Settings
from gateway.crypto import Vault
from gateway.db.pool import create_pool
from gateway.logging import get_logger

log = get_logger(__name__)

ROLES = ("router", "delivery", "poller", "dispatcher", "scheduler")


@dataclass
class Context:
    """What every role gets: settings, the database pool, the broker and a confirm publisher."""

    settings: Settings
    pool: asyncpg.Pool
    amqp: AbstractRobustConnection
    publisher: Publisher
    topology: Topology
    vault: Vault
    name: str = "mailgw"
    extras: dict[str, object] = field(default_factory=dict)


RoleMain = Callable[[Context, asyncio.Event], Coroutine[Any, Any, None]]


def role_main(role: str) -> RoleMain:
    """Each role is `consumers.<role>.run(ctx, stop)`: runs until `stop` is set."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose from {', '.join(ROLES)}")
    module = importlib.import_module(f"consumers.{role}")
    main: RoleMain = module.run
    return main


async def open_context(settings: Settings, name: str) -> Context:
    pool = await create_pool(settings.database_url, max_size=settings.db_pool_size)
    amqp = await connect(settings, name)
    topology = Topology(settings)
    channel = await amqp.channel()
    await topology.declare(channel)
    await channel.close()
    publisher = await Publisher.open(amqp, topology)
    return Context(settings, pool, amqp, publisher, topology, Vault(settings.secret_keys()), name)


async def close_context(ctx: Context) -> None:
    await ctx.amqp.close()
    await ctx.pool.close()


async def run_roles(settings: Settings, roles: list[str], stop: asyncio.Event | None = None) -> None:
    """Run the given roles in this process until SIGINT/SIGTERM (or `stop`)."""
    stop = stop or asyncio.Event()
    mains = [(role, role_main(role)) for role in roles]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    ctx = await open_context(settings, "+".join(roles))
    try:
        tasks = [asyncio.create_task(main(ctx, stop), name=role) for role, main in mains]
        log.info("roles_started", roles=roles)
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        for task in done:
            if task is not stopper and task.exception() is not None:
                log.error("role_crashed", role=task.get_name(), error=repr(task.exception()))
        await asyncio.gather(*tasks, return_exceptions=True)
        stopper.cancel()
    finally:
        await close_context(ctx)
        log.info("roles_stopped", roles=roles)
