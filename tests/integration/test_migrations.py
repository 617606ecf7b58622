"""Migrations: idempotent, and safe when several processes apply them at once."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from gateway.db.migrate import available, migrate
from tests.support.services import ADMIN_DSN, drop_test_database, dsn_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def empty_database() -> AsyncIterator[str]:
    name = f"mailgw_e_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await admin.close()
    try:
        yield dsn_for(name)
    finally:
        await drop_test_database(name)


async def _applied(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")]
    finally:
        await conn.close()


async def test_migrate_twice_is_idempotent(empty_database: str) -> None:
    versions = [v for v, _ in available()]
    assert await migrate(empty_database) == versions
    assert await migrate(empty_database) == []
    assert await _applied(empty_database) == versions


async def test_concurrent_migrations_apply_once(empty_database: str) -> None:
    versions = [v for v, _ in available()]
    results = await asyncio.gather(*(migrate(empty_database) for _ in range(5)))
    assert sorted(results, key=len) == [[], [], [], [], versions]
    assert await _applied(empty_database) == versions
    conn = await asyncpg.connect(empty_database)
    try:
        assert await conn.fetchval("SELECT to_regclass('public.mailboxes') IS NOT NULL")
    finally:
        await conn.close()
