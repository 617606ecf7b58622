"""Delivery fixtures: a role context on the test's database and prefix, an SMTP sink, an event tap."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from consumers import delivery
from consumers.runner import Context, close_context, open_context
from gateway.config import Settings
from tests.integration.delivery.support import EventTap
from tests.support.smtp_sink import SmtpSink


@pytest.fixture
async def ctx(settings: Settings) -> AsyncIterator[Context]:
    c = await open_context(settings, "test-delivery")
    try:
        yield c
    finally:
        await close_context(c)


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    async with SmtpSink() as s:
        yield s


@pytest.fixture
async def tap(ctx: Context) -> AsyncIterator[EventTap]:
    t = EventTap()
    await t.start(ctx.amqp, ctx.topology)
    try:
        yield t
    finally:
        await t.stop()


@contextlib.asynccontextmanager
async def running(ctx: Context, settings: Settings | None = None) -> AsyncIterator[None]:
    """The real delivery role consuming the test's queue until the block ends."""
    if settings is not None:
        ctx = Context(settings, ctx.pool, ctx.amqp, ctx.publisher, ctx.topology, ctx.vault, ctx.name)
    stop = asyncio.Event()
    task = asyncio.create_task(delivery.run(ctx, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


@pytest.fixture
async def worker(ctx: Context) -> AsyncIterator[None]:
    async with running(ctx):
        yield
