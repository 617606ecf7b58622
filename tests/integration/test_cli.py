"""The `mailgw` command run as a subprocess against the test database."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import orjson
import pytest

from gateway.config import Settings
from gateway.db import workspaces as wsdb
from gateway.db.pool import connect

pytestmark = pytest.mark.integration

MAILGW = str(Path(sys.executable).parent / "mailgw")


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGW_")}
    env.update(
        MAILGW_DATABASE_URL=settings.database_url,
        MAILGW_SECRET_KEY="cli-test-secret",
        MAILGW_DATA_DIR=str(settings.data_dir),
        MAILGW_LOG_FORMAT="json",
        MAILGW_AMQP_URL="amqp://guest:mq-Pass-991@127.0.0.1:5672/",
    )
    env.update(extra)
    return env


async def run(settings: Settings, *args: str, stdin: bytes = b"", **env: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        MAILGW,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(settings, **env),
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_bootstrap_prints_the_key_once(settings: Settings) -> None:
    code, out, _ = await run(settings, "bootstrap")
    assert code == 0
    key = out.strip().splitlines()[-1]
    assert key.startswith("sk_user_") and key.strip() == key
    code, out, _ = await run(settings, "bootstrap")
    assert code == 0 and "sk_user_" not in out and "exists" in out
    code, out, _ = await run(settings, "bootstrap", "--json")
    assert code == 0 and "key" not in orjson.loads(out)


async def test_bootstrap_json(settings: Settings) -> None:
    code, out, _ = await run(settings, "bootstrap", "--json")
    assert code == 0
    assert orjson.loads(out)["key"].startswith("sk_user_")


async def test_config_masks_secrets(settings: Settings) -> None:
    code, out, _ = await run(settings, "config")
    assert code == 0
    assert "cli-test-secret" not in out and "mq-Pass-991" not in out
    cfg = orjson.loads(out)
    assert cfg["MAILGW_SECRET_KEY"] == "********"


async def test_invalid_setting_stops_with_its_name(settings: Settings) -> None:
    code, _, err = await run(settings, "config", MAILGW_HTTP_PORT="nope")
    assert code == 2 and "MAILGW_HTTP_PORT" in err


async def test_mailbox_and_identity_add(settings: Settings) -> None:
    conn = await connect(settings.database_url)
    try:
        op = await wsdb.create_operator(conn)
        ws = (await wsdb.create_workspace(conn, op, "Acme"))["id"]
    finally:
        await conn.close()
    code, out, err = await run(
        settings,
        "mailbox",
        "add",
        "--workspace",
        ws,
        "--email",
        "alice@tryacme.example",
        "--smtp-host",
        "127.0.0.1",
        "--smtp-port",
        "2525",
        "--smtp-security",
        "none",
        "--imap-host",
        "127.0.0.1",
        "--imap-port",
        "1143",
        "--imap-security",
        "none",
        "--password-env",
        "MBX_PW",
        "--daily-cap",
        "25",
        MBX_PW="cli-Pw-5521",
    )
    assert code == 0, err
    assert "cli-Pw-5521" not in out + err
    mbx = orjson.loads(out)
    assert mbx["id"].startswith("mbx_") and mbx["dailyCap"] == 25 and mbx["imap"]["port"] == 1143
    code, out, err = await run(
        settings,
        "mailbox",
        "add",
        "--workspace",
        ws,
        "--email",
        "bob@tryacme.example",
        "--smtp-host",
        "127.0.0.1",
        "--smtp-port",
        "2525",
        "--password-stdin",
        stdin=b"stdin-Pw-1\n",
    )
    assert code == 0, err
    mbx2 = orjson.loads(out)["id"]

    code, out, err = await run(
        settings,
        "identity",
        "add",
        "--workspace",
        ws,
        "--handle",
        "alice.acme@example.com",
        "--display-name",
        "Alice",
        "--timezone",
        "Europe/Paris",
        "--mailbox",
        mbx["id"],
        "--mailbox",
        mbx2,
    )
    assert code == 0, err
    idn = orjson.loads(out)
    assert idn["mailboxIds"] == [mbx["id"], mbx2] and idn["timezone"] == "Europe/Paris"

    code, _, err = await run(
        settings, "identity", "add", "--workspace", ws, "--handle", "x", "--mailbox", "mbx_nope"
    )
    assert code == 1 and "mailboxIds[0]" in err
    code, _, err = await run(
        settings,
        "mailbox",
        "add",
        "--workspace",
        ws,
        "--email",
        "c@tryacme.example",
        "--smtp-host",
        "h",
        "--smtp-port",
        "25",
        "--password-env",
        "UNSET_PW_VAR",
    )
    assert code == 1 and "UNSET_PW_VAR" in err

    code, out, err = await run(
        settings,
        "webhook",
        "add",
        "--workspace",
        ws,
        "--url",
        "https://hooks.example.com/x",
        "--event",
        "email.sent",
    )
    assert code == 0, err
    hook = orjson.loads(out)
    assert hook["id"].startswith("whk_") and hook["secret"].startswith("whsec_")
    assert hook["events"] == ["email.sent"]
    conn = await connect(settings.database_url)
    try:
        stored = await conn.fetchval("SELECT secret FROM webhook_endpoints WHERE id = $1", hook["id"])
    finally:
        await conn.close()
    assert stored and hook["secret"] not in stored  # encrypted at rest
