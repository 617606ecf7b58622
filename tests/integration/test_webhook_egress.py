"""Webhook egress against a real aiohttp receiver on 127.0.0.1: SSRF refusal and bounded POSTs."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from gateway.webhooks.egress import ForbiddenDestination, GuardedResolver, make_session, post
from gateway.webhooks.signing import headers, new_secret

pytestmark = pytest.mark.integration

BIG = 10 * 1024 * 1024


@dataclass
class Receiver:
    port: int
    hits: list[str] = field(default_factory=list)
    bodies: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver(port=0)

    async def ok(request: web.Request) -> web.Response:
        rec.hits.append(request.path)
        rec.bodies.append((await request.read(), dict(request.headers)))
        return web.Response(text="thanks")

    async def redirect(request: web.Request) -> web.Response:
        rec.hits.append(request.path)
        raise web.HTTPFound("/ok")

    async def slow(request: web.Request) -> web.Response:
        rec.hits.append(request.path)
        # Held until the test ends, so teardown does not wait on a sleeping handler.
        await asyncio.wait_for(rec.release.wait(), 30)
        return web.Response(text="late")

    async def big(request: web.Request) -> web.StreamResponse:
        rec.hits.append(request.path)
        resp = web.StreamResponse()
        resp.content_length = BIG
        await resp.prepare(request)
        chunk = b"x" * 65536
        try:
            for _ in range(BIG // len(chunk)):
                await resp.write(chunk)
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass  # the client stopped reading after its limit, as intended
        return resp

    async def small(request: web.Request) -> web.Response:
        rec.hits.append(request.path)
        return web.Response(body=b"y" * 3000)

    async def busy(request: web.Request) -> web.Response:
        rec.hits.append(request.path)
        return web.Response(status=429, headers={"Retry-After": "7"}, text="slow down")

    app = web.Application()
    app.router.add_post("/ok", ok)
    app.router.add_post("/redirect", redirect)
    app.router.add_post("/slow", slow)
    app.router.add_post("/big", big)
    app.router.add_post("/small", small)
    app.router.add_post("/busy", busy)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.port = runner.addresses[0][1]
    try:
        yield rec
    finally:
        rec.release.set()
        await runner.cleanup()


BODY = json.dumps({"id": "evt_1", "type": "webhook.test", "data": {}}).encode()


async def test_resolver_refuses_a_name_resolving_to_loopback() -> None:
    # `localhost` is refused by name at registration; here the name check is bypassed
    # and the resolver alone must refuse what the name resolves to.
    resolver = GuardedResolver(allow_private=False)
    try:
        with pytest.raises(ForbiddenDestination, match="loopback"):
            await resolver.resolve("localhost", 80, family=socket.AF_UNSPEC)
    finally:
        await resolver.close()


async def test_resolver_path_refuses_at_connect_time(receiver: Receiver) -> None:
    async with make_session(timeout=5, allow_private=False) as session:
        result = await post(session, receiver.url("/ok", host="localhost"), BODY, {}, allow_private=False)
    assert result.status is None
    assert result.error is not None and result.error.startswith("forbidden destination")
    assert "loopback" in result.error
    assert receiver.hits == []


@pytest.mark.parametrize("host", ["127.0.0.1", "[::ffff:127.0.0.1]", "[::1]", "0.0.0.0"])
async def test_ip_literal_refused(receiver: Receiver, host: str) -> None:
    async with make_session(timeout=5, allow_private=False) as session:
        result = await post(session, receiver.url("/ok", host=host), BODY, {}, allow_private=False)
    assert result.status is None
    assert result.error is not None and result.error.startswith("forbidden destination")
    assert receiver.hits == []


async def test_session_refuses_literal_even_without_post_helper(receiver: Receiver) -> None:
    # The socket factory judges the address actually dialled, IP literals included.
    async with make_session(timeout=5, allow_private=False) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            await session.post(receiver.url("/ok"), data=BODY, allow_redirects=False)
    assert isinstance(info.value.os_error, ForbiddenDestination)
    assert receiver.hits == []


async def test_allowed_post_is_delivered_and_verifiable(receiver: Receiver) -> None:
    secret = new_secret()
    async with make_session(timeout=5, allow_private=True) as session:
        for host in ("127.0.0.1", "localhost"):
            result = await post(
                session, receiver.url("/ok", host=host), BODY, headers([secret], "evt_1", BODY), True
            )
            assert result.ok, result
            assert result.status == 200
            assert result.snippet == "thanks"
            assert result.error is None
            assert result.duration_ms >= 0
    body, got = receiver.bodies[0]
    assert body == BODY
    assert got["webhook-id"] == "evt_1"
    assert got["Content-Type"] == "application/json"
    assert Webhook(secret).verify(body, got)["type"] == "webhook.test"


async def test_redirect_not_followed(receiver: Receiver) -> None:
    async with make_session(timeout=5, allow_private=True) as session:
        result = await post(session, receiver.url("/redirect"), BODY, {}, True)
    assert result.status == 302
    assert not result.ok
    assert receiver.hits == ["/redirect"]


async def test_slow_endpoint_times_out(receiver: Receiver) -> None:
    async with make_session(timeout=0.3, allow_private=True) as session:
        result = await post(session, receiver.url("/slow"), BODY, {}, True)
    assert result.status is None
    assert result.error == "timeout after 0.3s"
    assert 250 <= result.duration_ms < 5000
    assert not result.ok


async def test_large_bodies_are_truncated(receiver: Receiver) -> None:
    async with make_session(timeout=10, allow_private=True) as session:
        small = await post(session, receiver.url("/small"), BODY, {}, True)
        big = await post(session, receiver.url("/big"), BODY, {}, True)
    assert small.ok and small.snippet == "y" * 1024
    assert big.status == 200 and big.error is None
    assert big.snippet == "x" * 1024


async def test_retry_after_reported(receiver: Receiver) -> None:
    async with make_session(timeout=5, allow_private=True) as session:
        result = await post(session, receiver.url("/busy"), BODY, {}, True)
    assert result.status == 429
    assert result.retry_after == 7.0
    assert result.snippet == "slow down"


async def test_connection_refused_is_an_error_not_an_exception() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with make_session(timeout=5, allow_private=True) as session:
        result = await post(session, f"http://127.0.0.1:{port}/", BODY, {}, True)
    assert result.status is None
    assert result.error is not None and "ClientConnectorError" in result.error
