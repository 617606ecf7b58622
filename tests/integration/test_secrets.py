"""Secrets never in clear: mailbox passwords and API keys absent from every table and from logs."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator

import asyncpg
import pytest
import structlog
from aiohttp.test_utils import TestClient

from gateway.logging import configure, get_logger

pytestmark = pytest.mark.integration

SMTP_PW = "smtp-Secret-7391"
IMAP_PW = "imap-Secret-4482"


@pytest.fixture
def log_text(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    configure("json", "debug")
    try:
        yield buf
    finally:
        structlog.reset_defaults()


async def _dump(pool: asyncpg.Pool) -> str:
    tables = await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    parts = []
    for t in tables:
        parts.append(await pool.fetchval(f"SELECT coalesce(string_agg(x::text, ' '), '') FROM \"{t[0]}\" x"))
    return "\n".join(parts)


async def test_passwords_and_keys_absent_from_database_logs_and_responses(
    client: TestClient,  # type: ignore[type-arg]
    pool: asyncpg.Pool,
    platform_key: str,
    log_text: io.StringIO,
) -> None:
    p = {"X-Api-Key": platform_key}
    ws = (await (await client.post("/v1/workspaces", json={"name": "A"}, headers=p)).json())["data"]["id"]
    key = (await (await client.post(f"/v1/workspaces/{ws}/keys", headers=p)).json())["data"]["key"]
    h = {"Authorization": f"Bearer {key}"}
    body = {
        "email": "alice@tryacme.example",
        "smtp": {"host": "smtp.x", "port": 587, "security": "starttls", "password": SMTP_PW},
        "imap": {"host": "imap.x", "port": 993, "security": "tls", "password": IMAP_PW},
    }
    resp = await client.post("/v1/mailboxes", json=body, headers=h)
    assert resp.status == 201
    mbx = (await resp.json())["data"]
    responses = [await resp.text()]
    # Requests that fail validation while carrying secrets.
    bad = {**body, "smtp": {**body["smtp"], "port": "x"}, "extra": SMTP_PW}
    resp = await client.post("/v1/mailboxes", json=bad, headers=h)
    assert resp.status == 400
    responses.append(await resp.text())
    resp = await client.patch(
        f"/v1/mailboxes/{mbx['id']}",
        json={"smtp": {"password": SMTP_PW + "2"}, "imap": {"port": 0}},
        headers=h,
    )
    assert resp.status == 400
    responses.append(await resp.text())
    resp = await client.patch(
        f"/v1/mailboxes/{mbx['id']}", json={"smtp": {"password": SMTP_PW + "3"}}, headers=h
    )
    assert resp.status == 200
    responses.append(await resp.text())
    for path in (f"/v1/mailboxes/{mbx['id']}", "/v1/mailboxes"):
        responses.append(await (await client.get(path, headers=h)).text())
    # The redaction processor also guards code that logs carelessly.
    get_logger("test").info("careless", password=SMTP_PW, headers={"X-Api-Key": key}, note=f"key {key}")

    logs = log_text.getvalue()
    assert "mailbox_created" in logs  # logging was captured at all
    dump = await _dump(pool)
    assert "alice@tryacme.example" in dump  # the dump covers the mailbox row
    for secret in (SMTP_PW, IMAP_PW, key, platform_key):
        assert secret not in dump
        assert secret not in logs
        for text in responses:
            assert secret not in text
    for i in (0, 3, 4, 5):  # successful answers never name a password at all
        assert "password" not in responses[i]
    got = await (await client.get(f"/v1/mailboxes/{mbx['id']}", headers=h)).json()
    assert "password" not in str(got["data"])
