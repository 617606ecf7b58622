"""asyncpg pool with JSON codecs (orjson) so jsonb columns come back as Python objects.

Pool connections are returned without session state: nothing here uses `SET` (only
`SET LOCAL`), `LISTEN`, session advisory locks (only `pg_advisory_xact_lock`; migrations take
theirs on a connection of their own), temporary tables or `WITH HOLD` cursors. So releasing a
connection skips asyncpg's default reset query (advisory unlock, `CLOSE ALL`, `UNLISTEN *`,
`RESET ALL`: one round trip per release); asyncpg still rolls back a leaked transaction and
drops listeners. Code that needs session state must use a connection of its own.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

Pool = asyncpg.Pool
Connection = asyncpg.Connection
Record = asyncpg.Record


async def _init(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(
            typ,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def _no_session_reset(conn: asyncpg.Connection) -> None:
    """Nothing to reset (see the module docstring); asyncpg rolls back open transactions itself."""


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init, reset=_no_session_reset,
        command_timeout=60,
    )
    return pool


async def connect(dsn: str) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    await _init(conn)
    return conn


def row_dict(row: asyncpg.Record | None) -> dict[str, Any] | None:
    return dict(row) if row is not None else None
