"""Test data made straight in the database (fast, independent of the admin API under test)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway.crypto import Vault
from gateway.db import workspaces as wsdb
from gateway.ids import new_id


@dataclass
class Tenant:
    operator_id: str
    workspace_id: str
    key: str  # workspace key (sk_…)

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Api-Key": self.key}


async def tenant(pool: asyncpg.Pool, name: str = "Acme") -> Tenant:
    operator = await wsdb.create_operator(pool)
    ws = await wsdb.create_workspace(pool, operator, name)
    key, _ = await wsdb.insert_key(
        pool, kind="workspace", operator_id=operator, workspace_id=ws["id"], name="test"
    )
    return Tenant(operator, ws["id"], key)


async def mailbox(
    pool: asyncpg.Pool,
    vault: Vault,
    workspace_id: str,
    email: str,
    *,
    smtp_host: str = "127.0.0.1",
    smtp_port: int = 2525,
    smtp_security: str = "none",
    username: str | None = None,
    password: str = "secret",
    imap_port: int | None = 1143,
    daily_cap: int = 1000,
    from_name: str | None = None,
    status: str = "active",
) -> str:
    mbx_id = new_id("mbx")
    user = username or email
    smtp: dict[str, Any] = {"host": smtp_host, "port": smtp_port, "security": smtp_security,
                            "username": user}
    imap: dict[str, Any] | None = (
        {"host": "127.0.0.1", "port": imap_port, "security": "none", "username": user}
        if imap_port else None
    )
    await pool.execute(
        "INSERT INTO mailboxes (id, workspace_id, email, from_name, smtp, smtp_password_enc,"
        " imap, imap_password_enc, daily_cap, status)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        mbx_id, workspace_id, email, from_name, smtp, vault.encrypt(password),
        imap, vault.encrypt(password) if imap else None, daily_cap, status,
    )
    return mbx_id


async def identity(
    pool: asyncpg.Pool,
    workspace_id: str,
    handle: str,
    mailbox_ids: list[str],
    *,
    daily_cap: int = 1000,
    timezone: str = "UTC",
    display_name: str | None = None,
) -> str:
    idn_id = new_id("idn")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO identities (id, workspace_id, handle, display_name, daily_cap, timezone)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            idn_id, workspace_id, handle, display_name, daily_cap, timezone,
        )
        await conn.executemany(
            "INSERT INTO identity_mailboxes (identity_id, mailbox_id, position) VALUES ($1, $2, $3)",
            [(idn_id, m, i) for i, m in enumerate(mailbox_ids)],
        )
    return idn_id
