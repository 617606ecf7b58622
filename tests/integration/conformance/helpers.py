"""Helpers shared by the SPEC contract tests: response formats, bounded polling, sending,
checking a send's answer and reading the events a webhook receiver got."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.integration.conformance.conftest import Api, Receiver, Resp, Tenant

TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
RFC_ID = re.compile(r"^<[^<>@\s]+@[^<>@\s]+>$")
WAIT = 20.0  # seconds any asynchronous outcome (delivery, event) may take on loopback


def iso_in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


async def until(
    check: Callable[[], Awaitable[Any]], what: str, timeout: float = WAIT  # noqa: ASYNC109
) -> Any:
    """Poll `check` (bounded) until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


async def send(api: Api, t: Tenant, body: dict[str, Any], **kw: Any) -> Resp:
    return await api.call("POST", t.send_path, key=t.key, json_body=body, **kw)


def check_send_body(body: dict[str, Any], t: Tenant) -> None:
    assert set(body) == {"accepted", "rejected", "remaining", "dailyCap", "identity", "messages"}, body
    assert body["identity"] == t.handle
    assert body["accepted"] == sum(m["status"] == "accepted" for m in body["messages"])
    assert body["rejected"] == sum(m["status"] == "rejected" for m in body["messages"])
    for m in body["messages"]:
        if m["status"] == "accepted":
            assert set(m) == {"to", "id", "status", "convId", "affinity", "account"}, m
            assert RFC_ID.match(m["id"]), m
            assert m["convId"].startswith("conv_"), m
            assert m["affinity"] in ("new", "existing", "reassigned"), m
            assert set(m["account"]) == {"id", "email"} and m["account"]["id"].startswith("mbx_"), m
        else:
            assert m["status"] == "rejected", m
            assert m.get("reason") in ("cap_exceeded", "suppressed", "no_mailbox"), m


def verify_signature(secret: str, headers: dict[str, str], raw: bytes) -> None:
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, sig = lower["webhook-id"], lower["webhook-timestamp"], lower["webhook-signature"]
    assert abs(int(ts) - time.time()) < 300, ts
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + raw, hashlib.sha256).digest())
    given = [s.split(",", 1)[1] for s in sig.split() if s.startswith("v1,")]
    assert expected.decode() in given, (sig, expected)


async def next_event(rx: Receiver, etype: str) -> tuple[dict[str, str], bytes, dict[str, Any]]:
    async with asyncio.timeout(WAIT):
        while True:
            headers, raw = await rx.got.get()
            event = json.loads(raw)
            if event.get("type") == etype:
                return headers, raw, event
