"""The dispatcher end to end: broker → dispatcher → signed POSTs to real receivers on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from standardwebhooks.webhooks import Webhook

from consumers.runner import Context
from tests.integration.webhooks.conftest import (
    Receiver,
    create_hook,
    deliveries,
    publish_event,
    settled,
)
from tests.support.factories import Tenant

pytestmark = pytest.mark.integration

MakeReceiver = Callable[..., Awaitable[Receiver]]
StartDispatcher = Callable[..., Awaitable[Context]]


def verify(secret: str, seen: Any) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(seen.body, seen.headers)
    return payload


async def test_signed_delivery_with_filters(
    client: TestClient, ws: Tenant, make_receiver: MakeReceiver, start_dispatcher: StartDispatcher,  # type: ignore[type-arg]
) -> None:
    everything = await make_receiver()
    only_replies = await make_receiver()
    hook = await create_hook(client, ws, everything.url)
    replies = await create_hook(client, ws, only_replies.url, events=["reply.received"])
    ctx = await start_dispatcher()
    event = await publish_event(ctx, "email.sent", ws.workspace_id, {"messageId": "msg_1"})
    reply = await publish_event(ctx, "reply.received", ws.workspace_id)

    seen = await everything.wait_for(2)
    by_id = {s.headers["webhook-id"]: s for s in seen}
    payload = verify(hook["secret"], by_id[event["id"]])
    assert payload == event  # the body is the event model, unchanged
    assert by_id[event["id"]].headers["Content-Type"] == "application/json"
    got = await only_replies.wait_for(1)
    assert [s.headers["webhook-id"] for s in got] == [reply["id"]]
    verify(replies["secret"], got[0])

    log = await settled(client, ws, hook["id"], 2)
    assert {d["eventId"] for d in log} == {event["id"], reply["id"]}
    first = next(d for d in log if d["eventId"] == event["id"])
    assert first["attempt"] == 1 and first["status"] == "succeeded" and first["responseCode"] == 200
    assert first["eventType"] == "email.sent" and first["responseSnippet"] == "ok"
    assert first["durationMs"] >= 0 and first["nextAttemptAt"] is None
    assert first["createdAt"].endswith("Z")
    assert len(await settled(client, ws, replies["id"], 1)) == 1


async def test_fails_twice_then_succeeds_with_the_same_webhook_id(
    client: TestClient, ws: Tenant, make_receiver: MakeReceiver, start_dispatcher: StartDispatcher,  # type: ignore[type-arg]
) -> None:
    async def flaky(n: int, request: web.Request) -> web.StreamResponse:
        return web.Response(status=500, text="boom" * 1000) if n <= 2 else web.Response(text="fine")

    receiver = await make_receiver(flaky)
    hook = await create_hook(client, ws, receiver.url)
    ctx = await start_dispatcher()
    event = await publish_event(ctx, "email.sent", ws.workspace_id)

    seen = await receiver.wait_for(3)
    assert {s.headers["webhook-id"] for s in seen} == {event["id"]}
    stamps = [int(s.headers["webhook-timestamp"]) for s in seen]
    assert stamps == sorted(stamps) and stamps[2] > stamps[0]  # fresh on every attempt
    for s in seen:
        verify(hook["secret"], s)
    # Schedule [1, 2] with ±10 % jitter: gaps of about 1 s then 2 s.
    assert 0.85 <= seen[1].at - seen[0].at and 1.7 <= seen[2].at - seen[1].at

    log = await settled(client, ws, hook["id"], 3)
    assert [(d["attempt"], d["status"], d["responseCode"]) for d in log] == [
        (3, "succeeded", 200), (2, "failed", 500), (1, "failed", 500)]
    assert log[1]["nextAttemptAt"] is not None and log[0]["nextAttemptAt"] is None
    assert len(log[2]["responseSnippet"].encode()) <= 1024


async def test_schedule_exhausted_is_failed(
    client: TestClient, ws: Tenant, make_receiver: MakeReceiver, start_dispatcher: StartDispatcher,  # type: ignore[type-arg]
) -> None:
    async def down(n: int, request: web.Request) -> web.StreamResponse:
        return web.Response(status=503)

    receiver = await make_receiver(down)
    hook = await create_hook(client, ws, receiver.url)
    ctx = await start_dispatcher(webhook_retry_schedule=[1])
    await publish_event(ctx, "email.sent", ws.workspace_id)
    log = await settled(client, ws, hook["id"], 2)
    assert [(d["attempt"], d["status"]) for d in log] == [(2, "failed"), (1, "failed")]
    assert log[0]["nextAttemptAt"] is None and log[0]["error"] == "HTTP 503"
    assert len(receiver.seen) == 2


async def test_timeout_is_a_failure_then_retried(
    client: TestClient, ws: Tenant, make_receiver: MakeReceiver, start_dispatcher: StartDispatcher,  # type: ignore[type-arg]
) -> None:
    release = asyncio.Event()

    async def slow_first(n: int, request: web.Request) -> web.StreamResponse:
        if n == 1:
            await release.wait()
        return web.Response(text="ok")

    receiver = await make_receiver(slow_first)
    hook = await create_hook(client, ws, receiver.url)
    ctx = await start_dispatcher(webhook_timeout=0.5)
    await publish_event(ctx, "email.sent", ws.workspace_id)
    try:
        log = await settled(client, ws, hook["id"], 2)
    finally:
        release.set()
    assert [(d["attempt"], d["status"]) for d in log] == [(2, "succeeded"), (1, "failed")]
    assert log[1]["responseCode"] is None and "timeout" in log[1]["error"]


async def test_410_disables_the_endpoint(
    client: TestClient, ws: Tenant, pool: asyncpg.Pool, make_receiver: MakeReceiver,  # type: ignore[type-arg]
    start_dispatcher: StartDispatcher,
) -> None:
    async def gone(n: int, request: web.Request) -> web.StreamResponse:
        return web.Response(status=410)

    receiver = await make_receiver(gone)
    watcher = await make_receiver()
    hook = await create_hook(client, ws, receiver.url)
    watch = await create_hook(client, ws, watcher.url, events=["webhook_endpoint.disabled"])
    ctx = await start_dispatcher()
    await publish_event(ctx, "email.sent", ws.workspace_id)

    notice = await watcher.wait_for(1)
    payload = verify(watch["secret"], notice[0])
    assert payload["type"] == "webhook_endpoint.disabled"
    assert payload["data"]["webhookId"] == hook["id"] and "410" in payload["data"]["reason"]
    got = (await (await client.get(f"/v1/webhooks/{hook['id']}", headers=ws.headers)).json())["data"]
    assert got["enabled"] is False and "410" in got["disabledReason"]
    log = await settled(client, ws, hook["id"], 1)
    assert [(d["attempt"], d["status"], d["responseCode"]) for d in log] == [(1, "failed", 410)]
    assert log[0]["nextAttemptAt"] is None
    # No further events reach a disabled endpoint; re-enabling clears the reason.
    witness = await make_receiver()
    await create_hook(client, ws, witness.url, events=["email.sent"])
    later = await publish_event(ctx, "email.sent", ws.workspace_id)
    assert [s.headers["webhook-id"] for s in await witness.wait_for(1)] == [later["id"]]
    assert await pool.fetchval(
        "SELECT count(*) FROM events WHERE type = 'webhook_endpoint.disabled'") == 1
    resp = await client.patch(f"/v1/webhooks/{hook['id']}", json={"enabled": True}, headers=ws.headers)
    assert (await resp.json())["data"]["disabledReason"] is None
    assert len(receiver.seen) == 1


async def test_failing_for_too_long_disables(
    client: TestClient, ws: Tenant, pool: asyncpg.Pool, make_receiver: MakeReceiver,  # type: ignore[type-arg]
    start_dispatcher: StartDispatcher,
) -> None:
    async def broken(n: int, request: web.Request) -> web.StreamResponse:
        return web.Response(status=500)

    receiver = await make_receiver(broken)
    hook = await create_hook(client, ws, receiver.url)
    ctx = await start_dispatcher(webhook_disable_after=0.5, webhook_retry_schedule=[1, 2, 3])
    await publish_event(ctx, "email.sent", ws.workspace_id)
    log = await settled(client, ws, hook["id"], 2)
    assert [(d["attempt"], d["status"]) for d in log] == [(2, "failed"), (1, "failed")]
    assert log[0]["nextAttemptAt"] is None  # no retry once disabled
    got = (await (await client.get(f"/v1/webhooks/{hook['id']}", headers=ws.headers)).json())["data"]
    assert got["enabled"] is False and "failing continuously" in got["disabledReason"]
    row = await pool.fetchrow("SELECT data FROM events WHERE type = 'webhook_endpoint.disabled'")
    assert row is not None and row["data"]["webhookId"] == hook["id"]


async def test_429_retry_after_is_respected(
    client: TestClient, ws: Tenant, make_receiver: MakeReceiver, start_dispatcher: StartDispatcher,  # type: ignore[type-arg]
) -> None:
    async def busy_once(n: int, request: web.Request) -> web.StreamResponse:
        if n == 1:
            return web.Response(status=429, headers={"Retry-After": "3"})
        return web.Response(text="ok")

    receiver = await make_receiver(busy_once)
    hook = await create_hook(client, ws, receiver.url)
    ctx = await start_dispatcher(webhook_retry_schedule=[1, 10])
    await publish_event(ctx, "email.sent", ws.workspace_id)
    seen = await receiver.wait_for(2, within=20)
    assert seen[1].at - seen[0].at >= 2.9  # the schedule alone would retry after ~1 s
    log = await settled(client, ws, hook["id"], 2)
    assert [(d["attempt"], d["responseCode"]) for d in log] == [(2, 200), (1, 429)]


async def test_redirect_is_not_followed(
    client: TestClient, ws: Tenant, make_receiver: MakeReceiver, start_dispatcher: StartDispatcher,  # type: ignore[type-arg]
) -> None:
    target = await make_receiver()

    async def moved(n: int, request: web.Request) -> web.StreamResponse:
        if n == 1:
            raise web.HTTPFound(target.url)
        return web.Response(text="ok")

    receiver = await make_receiver(moved)
    hook = await create_hook(client, ws, receiver.url)
    ctx = await start_dispatcher()
    await publish_event(ctx, "email.sent", ws.workspace_id)
    log = await settled(client, ws, hook["id"], 2)
    assert [(d["attempt"], d["status"], d["responseCode"]) for d in log] == [
        (2, "succeeded", 200), (1, "failed", 302)]
    assert "redirect" in log[1]["error"]
    assert target.seen == []


async def test_slow_endpoint_does_not_delay_others(
    client: TestClient, ws: Tenant, make_receiver: MakeReceiver, start_dispatcher: StartDispatcher,  # type: ignore[type-arg]
) -> None:
    release = asyncio.Event()
    inflight = 0
    peak = 0

    async def stuck(n: int, request: web.Request) -> web.StreamResponse:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        try:
            await release.wait()
        finally:
            inflight -= 1
        return web.Response(text="late")

    slow = await make_receiver(stuck)
    fast = await make_receiver()
    slow_hook = await create_hook(client, ws, slow.url)
    fast_hook = await create_hook(client, ws, fast.url)
    ctx = await start_dispatcher(webhook_concurrency_per_endpoint=2, webhook_concurrency=8,
                                 webhook_timeout=30)
    sent = [await publish_event(ctx, "email.sent", ws.workspace_id, {"n": i}) for i in range(12)]
    try:
        got = await fast.wait_for(12, within=15)  # while the slow endpoint holds every request
        assert {s.headers["webhook-id"] for s in got} == {e["id"] for e in sent}
        await slow.wait_for(2)
        assert peak == 2 and len(slow.seen) == 2  # bounded per endpoint
    finally:
        release.set()
    await slow.wait_for(12, within=20)
    assert peak <= 2
    assert len(await settled(client, ws, slow_hook["id"], 12)) == 12
    assert len(await settled(client, ws, fast_hook["id"], 12)) == 12
    for receiver in (slow, fast):  # queued and claimed attempts were each sent once
        assert sorted(s.headers["webhook-id"] for s in receiver.seen) == sorted(e["id"] for e in sent)


async def test_replay_and_test_event(
    client: TestClient, ws: Tenant, make_receiver: MakeReceiver, start_dispatcher: StartDispatcher,  # type: ignore[type-arg]
) -> None:
    receiver = await make_receiver()
    other = await make_receiver()
    hook = await create_hook(client, ws, receiver.url, events=["email.sent"])
    await create_hook(client, ws, other.url)
    ctx = await start_dispatcher()
    event = await publish_event(ctx, "email.sent", ws.workspace_id)
    await receiver.wait_for(1)
    log = await settled(client, ws, hook["id"], 1)

    resp = await client.post(f"/v1/webhooks/{hook['id']}/deliveries/{log[0]['id']}/retry",
                             headers=ws.headers)
    assert resp.status == 202
    assert (await resp.json())["data"]["attempt"] == 2
    seen = await receiver.wait_for(2)
    assert seen[1].headers["webhook-id"] == event["id"] and seen[1].body == seen[0].body
    log = await settled(client, ws, hook["id"], 2)
    assert [(d["attempt"], d["status"]) for d in log] == [(2, "succeeded"), (1, "succeeded")]

    resp = await client.post(f"/v1/webhooks/{hook['id']}/test", headers=ws.headers)
    assert resp.status == 202
    test_id = (await resp.json())["data"]["eventId"]
    seen = await receiver.wait_for(3)
    payload = verify(hook["secret"], seen[2])
    assert payload["id"] == test_id and payload["type"] == "webhook.test"
    assert payload["data"]["webhookId"] == hook["id"]
    await other.wait_for(1)  # the email.sent only: the test event went to its endpoint alone
    assert [s.headers["webhook-id"] for s in other.seen] == [event["id"]]
    assert (await client.post(f"/v1/webhooks/{hook['id']}/deliveries/dlv_missing/retry",
                              headers=ws.headers)).status == 404
    # The log pages newest first.
    log = await settled(client, ws, hook["id"], 3)
    url, paged = f"/v1/webhooks/{hook['id']}/deliveries?limit=2", []
    for _ in range(3):
        page = await (await client.get(url, headers=ws.headers)).json()
        paged += [d["id"] for d in page["data"]]
        if page["nextCursor"] is None:
            break
        url = f"/v1/webhooks/{hook['id']}/deliveries?limit=2&cursor={page['nextCursor']}"
    assert paged == [d["id"] for d in log]


async def test_both_secrets_sign_during_rotation(
    client: TestClient, ws: Tenant, make_receiver: MakeReceiver, start_dispatcher: StartDispatcher,  # type: ignore[type-arg]
) -> None:
    receiver = await make_receiver()
    hook = await create_hook(client, ws, receiver.url)
    resp = await client.post(f"/v1/webhooks/{hook['id']}/rotate-secret", headers=ws.headers)
    new_secret = (await resp.json())["data"]["secret"]
    ctx = await start_dispatcher()
    await publish_event(ctx, "email.sent", ws.workspace_id)
    seen = await receiver.wait_for(1)
    assert len(seen[0].headers["webhook-signature"].split(" ")) == 2
    verify(hook["secret"], seen[0])
    verify(new_secret, seen[0])
    assert len(await deliveries(client, ws, hook["id"])) == 1
