"""Shared by the benchmarks: the roles' context on a throwaway database and AMQP prefix, medians."""

from __future__ import annotations

import secrets
import statistics
import tempfile
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika

from consumers.runner import Context, close_context, open_context
from gateway.bus.topology import Topology
from gateway.config import Settings
from gateway.runtime import tune_gc
from tests.support.services import (
    AMQP_URL,
    create_test_database,
    drop_test_database,
    dsn_for,
    ensure_template,
)


@asynccontextmanager
async def throwaway_context(**settings: Any) -> AsyncIterator[Context]:
    """A context (pool, broker, publisher) on a fresh database and AMQP prefix, both removed on
    exit; `settings` are added to the benchmark defaults (JSON logs at warning level)."""
    db = await create_test_database(await ensure_template())
    tmp = tempfile.TemporaryDirectory()
    config = Settings(**{
        "database_url": dsn_for(db), "amqp_url": AMQP_URL, "amqp_prefix": f"bench{secrets.token_hex(3)}.",
        "data_dir": Path(tmp.name), "secret_key": "bench-secret", "log_level": "warning",
        "log_format": "json", **settings,
    })
    from gateway.logging import configure

    configure("json", "warning")
    ctx = await open_context(config, "bench")
    tune_gc()  # as every mailgw process does once started (gateway.runtime)
    try:
        yield ctx
    finally:
        conn = await aio_pika.connect(AMQP_URL)
        channel = await conn.channel()
        await Topology(config).delete(channel)
        await conn.close()
        await close_context(ctx)
        await drop_test_database(db)
        tmp.cleanup()


def median_ratio(numerators: Iterable[float], denominators: Iterable[float]) -> float:
    """The median of the per-run ratios (numerator run i / denominator run i)."""
    return statistics.median(n / d for n, d in zip(numerators, denominators, strict=True))
