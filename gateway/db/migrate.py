"""Versioned SQL migrations, applied in order under an advisory lock (safe when many start)."""

from __future__ import annotations

from importlib import resources

import asyncpg

from gateway.logging import get_logger

log = get_logger(__name__)

# Any constant works; it only has to be the same in every process of the deployment.
_LOCK_ID = 0x6D61696C67770001


def available() -> list[tuple[str, str]]:
    """(version, sql) for every migration file shipped in the package, sorted by name."""
    folder = resources.files("gateway.db") / "migrations"
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name.removesuffix(".sql"), p.read_text()) for p in files]


async def migrate(dsn: str) -> list[str]:
    """Apply pending migrations; returns the versions applied by this call."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            applied: list[str] = []
            for version, sql in available():
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)", version
                    )
                log.info("migration_applied", version=version)
                applied.append(version)
            return applied
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    finally:
        await conn.close()
