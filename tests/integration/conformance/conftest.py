"""Black-box fixtures: the real gateway (`mailgw all`) as a subprocess, and helpers that set up
a tenant through the public HTTP API only (no database access, no imports of handlers)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Generator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway.config import Settings
from tests.support.smtp_sink import SmtpSink

ROOT = Path(__file__).resolve().parents[3]
MAILGW = ROOT / ".venv" / "bin" / "mailgw"
READY_TIMEOUT = 40.0
STOP_TIMEOUT = 10.0
MAX_BODY_BYTES = 64 * 1024  # MAILGW_MAX_BODY_BYTES for the gateway under test
MAX_ATTACHMENT_BYTES = 256 * 1024  # MAILGW_MAX_ATTACHMENT_BYTES


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway_env(settings: Settings, port: int) -> dict[str, str]:
    """The process environment for `mailgw`, from the test's `settings` (no inherited MAILGW_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGW_")}
    secret = settings.secret_key.get_secret_value() if settings.secret_key else "test-secret-key"
    env.update(
        {
            "MAILGW_DATABASE_URL": settings.database_url,
            "MAILGW_AMQP_URL": settings.amqp_url,
            "MAILGW_AMQP_PREFIX": settings.amqp_prefix,
            "MAILGW_DATA_DIR": str(settings.data_dir),
            "MAILGW_SECRET_KEY": secret,
            "MAILGW_WEBHOOKS_ALLOW_PRIVATE": "true",
            "MAILGW_HTTP_HOST": "127.0.0.1",
            "MAILGW_HTTP_PORT": str(port),
            "MAILGW_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "MAILGW_SMTP_RETRY_SCHEDULE": "1,2",
            "MAILGW_WEBHOOK_RETRY_SCHEDULE": "1,2",
            "MAILGW_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
            "MAILGW_MAX_ATTACHMENT_BYTES": str(MAX_ATTACHMENT_BYTES),
            "MAILGW_LOG_FORMAT": "json",
            "MAILGW_SCHEDULER_INTERVAL": "0.5",
        }
    )
    return env


@dataclass
class Gateway:
    """A running `mailgw all`: where it listens and the platform key `bootstrap` printed."""

    base_url: str
    port: int
    platform_key: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]

    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


async def _run_bootstrap(env: Mapping[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(MAILGW), "bootstrap", "--json", env=dict(env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, f"mailgw bootstrap failed ({proc.returncode}): {err.decode()[-2000:]}"
    lines = [ln for ln in out.decode().splitlines() if ln.strip()]
    assert lines, f"mailgw bootstrap printed nothing; stderr: {err.decode()[-2000:]}"
    doc = json.loads(lines[-1])
    key = doc.get("key")
    assert isinstance(key, str) and key.startswith("sk_user_"), doc
    return key


async def _wait_ready(gw: Gateway) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    last = "no answer"
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if gw.proc.poll() is not None:
                raise RuntimeError(
                    f"mailgw all exited with {gw.proc.returncode} before ready:\n{gw.log_tail()}"
                )
            try:
                async with session.get(
                    f"{gw.base_url}/readyz", timeout=aiohttp.ClientTimeout(total=2)
                ) as resp:
                    if resp.status == 200:
                        return
                    last = f"{resp.status} {await resp.text()}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = repr(exc)
            await asyncio.sleep(0.1)  # poll interval of a bounded readiness loop
    raise RuntimeError(f"mailgw all not ready after {READY_TIMEOUT}s ({last}):\n{gw.log_tail()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item so fixtures can tell at teardown whether it failed."""
    report: pytest.TestReport = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
async def gateway(
    settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Gateway]:
    """`mailgw bootstrap --json`, then `mailgw all` on a free port, ready when /readyz is 200."""
    port = _free_port()
    env = gateway_env(settings, port)
    key = await _run_bootstrap(env)
    log_path = tmp_path / f"mailgw-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(  # noqa: ASYNC220 -- a long-lived child, not awaited here
            [str(MAILGW), "all"], env=env, cwd=str(tmp_path), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    gw = Gateway(f"http://127.0.0.1:{port}", port, key, proc, log_path, env)
    try:
        await _wait_ready(gw)
        yield gw
    finally:
        died = proc.poll()
        await asyncio.to_thread(_stop, proc)
        failed = any(
            getattr(getattr(request.node, f"rep_{w}", None), "failed", False) for w in ("setup", "call")
        )
        if failed or died is not None:
            sys.stderr.write(f"\n----- mailgw all (exit {proc.returncode}) log tail -----\n")
            sys.stderr.write(gw.log_tail() + "\n")
        if died is not None:
            pytest.fail(f"mailgw all died during the test with exit code {died}")


# -- HTTP helpers ---------------------------------------------------------------------------


@dataclass
class Resp:
    status: int
    headers: Mapping[str, str]
    raw: bytes

    @property
    def body(self) -> Any:
        return json.loads(self.raw) if self.raw else None

    def text(self) -> str:
        return self.raw.decode(errors="replace")


class Api:
    """A thin client: every call returns status, headers and the raw body (never raises on 4xx)."""

    def __init__(self, session: aiohttp.ClientSession, gw: Gateway) -> None:
        self.session = session
        self.gw = gw

    async def call(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        json_body: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        bearer: bool = False,
    ) -> Resp:
        h: dict[str, str] = dict(headers or {})
        if key is not None:
            if bearer:
                h["Authorization"] = f"Bearer {key}"
            else:
                h["X-Api-Key"] = key
        payload: Any = data
        if json_body is not None:
            payload = json.dumps(json_body).encode()
            h.setdefault("Content-Type", "application/json")
        async with self.session.request(
            method, self.gw.base_url + path, data=payload, headers=h, params=params,
            timeout=aiohttp.ClientTimeout(total=30), allow_redirects=False,
        ) as resp:
            raw = await resp.read()
            return Resp(resp.status, CIMultiDict(resp.headers), raw)


@pytest.fixture
async def http(gateway: Gateway) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def api(http: aiohttp.ClientSession, gateway: Gateway) -> Api:
    return Api(http, gateway)


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    async with SmtpSink() as s:
        yield s


def assert_error(resp: Resp, status: int | None = None) -> dict[str, Any]:
    """The SPEC error shape: {error: reason phrase, message, code: status[, details]}."""
    if status is not None:
        assert resp.status == status, f"expected {status}, got {resp.status}: {resp.text()[:500]}"
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    body = resp.body
    assert isinstance(body, dict), body
    assert set(body) <= {"error", "message", "code", "details"}, body
    assert body.get("code") == resp.status, body
    assert body.get("error") == HTTPStatus(resp.status).phrase, body
    assert isinstance(body.get("message"), str) and body["message"], body
    if "details" in body:
        assert isinstance(body["details"], list), body
        for d in body["details"]:
            assert isinstance(d, dict) and isinstance(d.get("field"), str), body
            assert isinstance(d.get("message"), str), body
    assert resp.headers.get("X-Request-Id"), "X-Request-Id missing"
    return body


# -- tenant setup through the public API ------------------------------------------------------


@dataclass
class Tenant:
    workspace_id: str
    key: str  # workspace key
    key_prefix: str
    platform_key: str
    mailboxes: list[dict[str, Any]] = field(default_factory=list)
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def handle(self) -> str:
        return str(self.identity["handle"])

    @property
    def send_path(self) -> str:
        return f"/v1/identities/{self.handle}/send"


async def create_workspace(api: Api, name: str = "Acme") -> Tenant:
    pk = api.gw.platform_key
    r = await api.call("POST", "/v1/workspaces", key=pk, json_body={"name": name})
    assert r.status == 201, r.text()
    ws = r.body["data"]
    r = await api.call("POST", f"/v1/workspaces/{ws['id']}/keys", key=pk, json_body={"name": "ci"})
    assert r.status == 201, r.text()
    k = r.body["data"]
    return Tenant(ws["id"], k["key"], k["prefix"], pk)


async def create_mailbox(
    api: Api, t: Tenant, sink: SmtpSink, email: str, *, daily_cap: int = 100, from_name: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "email": email,
        "smtp": {"host": "127.0.0.1", "port": sink.port, "security": "none",
                 "username": email, "password": "sink-pw"},
        "dailyCap": daily_cap,
    }
    if from_name is not None:
        body["fromName"] = from_name
    r = await api.call("POST", "/v1/mailboxes", key=t.key, json_body=body)
    assert r.status == 201, r.text()
    mbx: dict[str, Any] = r.body["data"]
    t.mailboxes.append(mbx)
    return mbx


async def create_identity(
    api: Api, t: Tenant, handle: str, mailbox_ids: list[str], *, daily_cap: int = 100,
    display_name: str | None = "Alice",
) -> dict[str, Any]:
    body: dict[str, Any] = {"handle": handle, "dailyCap": daily_cap, "mailboxIds": mailbox_ids}
    if display_name is not None:
        body["displayName"] = display_name
    r = await api.call("POST", "/v1/identities", key=t.key, json_body=body)
    assert r.status == 201, r.text()
    idn: dict[str, Any] = r.body["data"]
    t.identity = idn
    return idn


async def make_tenant(
    api: Api, sink: SmtpSink, name: str = "Acme", *, identity_cap: int = 100, mailbox_cap: int = 100,
    mailboxes: int = 1,
) -> Tenant:
    """Workspace + workspace key + mailbox(es) on the SMTP sink + an identity pooling them."""
    t = await create_workspace(api, name)
    tag = secrets.token_hex(3)
    for i in range(mailboxes):
        await create_mailbox(api, t, sink, f"sender{i}.{tag}@tryacme.example", daily_cap=mailbox_cap)
    await create_identity(
        api, t, f"alice.{tag}@example.com", [m["id"] for m in t.mailboxes], daily_cap=identity_cap
    )
    return t


@pytest.fixture
async def tenant(api: Api, sink: SmtpSink) -> Tenant:
    return await make_tenant(api, sink)


# -- webhook receiver -------------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    got: asyncio.Queue[tuple[dict[str, str], bytes]]
    fail_next: list[int]  # [n]: answer the next n POSTs with 500 and a 4 KiB body


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    got: asyncio.Queue[tuple[dict[str, str], bytes]] = asyncio.Queue()

    fail_next = [0]

    async def hook(request: web.Request) -> web.Response:
        got.put_nowait((dict(request.headers), await request.read()))
        if fail_next[0] > 0:
            fail_next[0] -= 1
            return web.Response(status=500, text="x" * 4096)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Receiver(f"http://127.0.0.1:{port}/hook", got, fail_next)
    finally:
        await runner.cleanup()
