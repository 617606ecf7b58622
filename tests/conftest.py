"""Shared fixtures: settings pointing at a fresh database and a private AMQP prefix."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.api.app import create_app
from gateway.bus.topology import Topology
from gateway.config import Settings
from gateway.db import workspaces as wsdb
from gateway.db.pool import create_pool
from tests.support.services import (
    AMQP_URL,
    create_test_database,
    drop_test_database,
    dsn_for,
    ensure_template,
)


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    template = await ensure_template()
    name = await create_test_database(template)
    try:
        yield dsn_for(name)
    finally:
        await drop_test_database(name)


@pytest.fixture
def amqp_prefix() -> str:
    return f"t{secrets.token_hex(4)}."


@pytest.fixture
async def settings(database_url: str, amqp_prefix: str, tmp_path: Path) -> AsyncIterator[Settings]:
    s = Settings(
        database_url=database_url,
        amqp_url=AMQP_URL,
        amqp_prefix=amqp_prefix,
        data_dir=tmp_path / "data",
        secret_key="test-secret-key",  # type: ignore[arg-type]
        webhooks_allow_private=True,
        smtp_retry_schedule=[1, 2],
        webhook_retry_schedule=[1, 2],
        rpc_timeout=5.0,
        log_format="json",
        public_url="http://127.0.0.1:8025",
    )
    yield s
    # Remove the queues and exchanges this test's prefix declared.
    # Bounded: a broker that stops answering must fail the run, not hang it.
    conn = await aio_pika.connect(AMQP_URL, timeout=10)
    try:
        channel = await conn.channel()
        await asyncio.wait_for(Topology(s).delete(channel), 60)
        # Processes started with the default SMTP schedule (CLI subprocesses that were not
        # given MAILGW_SMTP_RETRY_SCHEDULE) declared the default delay queues too.
        default = Settings(amqp_prefix=s.amqp_prefix, secret_key=s.secret_key)
        await asyncio.wait_for(Topology(default).delete(channel), 60)
    finally:
        await conn.close()


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(settings.database_url, max_size=4)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    server = TestServer(create_app(settings))
    async with TestClient(server) as c:
        yield c


@pytest.fixture
async def platform_key(pool: asyncpg.Pool) -> str:
    operator = await wsdb.create_operator(pool)
    key, _ = await wsdb.insert_key(
        pool, kind="platform", operator_id=operator, workspace_id=None, name="test"
    )
    return key
