"""Fixtures for the setup API tests: two tenants, and helpers to create resources over HTTP."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests.support import factories
from tests.support.factories import Tenant


@pytest.fixture
async def acme(pool: asyncpg.Pool) -> Tenant:
    return await factories.tenant(pool, "Acme")


@pytest.fixture
async def globex(pool: asyncpg.Pool) -> Tenant:
    return await factories.tenant(pool, "Globex")


def mailbox_body(email: str = "alice@tryacme.example", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "email": email,
        "fromName": "Alice Chen",
        "smtp": {
            "host": "smtp.tryacme.example",
            "port": 587,
            "security": "starttls",
            "username": email,
            "password": "smtp-pw-Zq81",
        },
        "imap": {"host": "imap.tryacme.example", "port": 993, "security": "tls", "password": "imap-pw-Xv27"},
        "dailyCap": 40,
    }
    body.update(extra)
    return body


async def create_mailbox(
    client: TestClient,
    tenant: Tenant,
    email: str = "alice@tryacme.example",  # type: ignore[type-arg]
    **extra: Any,
) -> dict[str, Any]:
    resp = await client.post("/v1/mailboxes", json=mailbox_body(email, **extra), headers=tenant.headers)
    assert resp.status == 201, await resp.text()
    data: dict[str, Any] = (await resp.json())["data"]
    return data
