"""Per-test isolation on the real services: a fresh database from a migrated template, and a
queue/exchange name prefix whose topology is deleted afterwards."""

from __future__ import annotations

import hashlib
import os
import secrets

import asyncpg

from gateway.db.migrate import available, migrate

ADMIN_DSN = os.environ.get("MAILGW_TEST_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("MAILGW_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def dsn_for(dbname: str) -> str:
    base, _, _ = ADMIN_DSN.rpartition("/")
    return f"{base}/{dbname}"


def template_name() -> str:
    digest = hashlib.sha256("".join(sql for _, sql in available()).encode()).hexdigest()[:12]
    return f"mailgw_tpl_{digest}"


async def ensure_template() -> str:
    """Create (once per schema version, shared by concurrent test runs) the migrated template."""
    name = template_name()
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute("SELECT pg_advisory_lock(727272)")
        try:
            exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await admin.execute(f'CREATE DATABASE "{name}"')
                try:
                    await migrate(dsn_for(name))
                except BaseException:
                    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
                    raise
        finally:
            await admin.execute("SELECT pg_advisory_unlock(727272)")
    finally:
        await admin.close()
    return name


async def create_test_database(template: str) -> str:
    name = f"mailgw_t_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        # CREATE DATABASE … TEMPLATE fails while anyone else copies the same template.
        for attempt in range(50):
            try:
                await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                break
            except asyncpg.ObjectInUseError:
                if attempt == 49:
                    raise
                import asyncio

                await asyncio.sleep(0.05 * (attempt + 1))
    finally:
        await admin.close()
    return name


async def drop_test_database(name: str) -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
