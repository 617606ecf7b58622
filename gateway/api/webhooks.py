"""Webhook endpoints: CRUD, secret rotation, the delivery log, replay and test events."""

from __future__ import annotations

from typing import Any, cast

import asyncpg
from aiohttp import web
from pydantic import BaseModel, Field

from gateway import events, outbox
from gateway.api.auth import workspace_of
from gateway.api.bodies import read_body, read_query
from gateway.api.context import CTX
from gateway.api.openapi import endpoint
from gateway.api.pagination import Page, decode, page_of
from gateway.api.responses import no_content, ok, ok_list
from gateway.db import webhooks as db
from gateway.errors import BadRequest, NotFound
from gateway.logging import get_logger
from gateway.timefmt import iso
from gateway.validation import Body
from gateway.webhooks import signing
from gateway.webhooks.addresses import check_url_async
from gateway.webhooks.schedule import unknown_events

log = get_logger(__name__)
routes = web.RouteTableDef()

# After a rotation the old secret keeps signing (beside the new one) for this long.
ROTATION_OVERLAP_SECONDS = 24 * 3600.0


class WebhookCreate(Body):
    url: str = Field(min_length=1, max_length=2048)
    events: list[str] = Field(default_factory=lambda: ["*"], min_length=1, max_length=50)
    description: str | None = Field(default=None, max_length=500)
    enabled: bool = True


class WebhookUpdate(Body):
    url: str | None = Field(default=None, min_length=1, max_length=2048)
    events: list[str] | None = Field(default=None, min_length=1, max_length=50)
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = None


class Webhook(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    disabledReason: str | None
    createdAt: str
    updatedAt: str


class WebhookCreated(Webhook):
    secret: str


class Secret(BaseModel):
    secret: str


class Delivery(BaseModel):
    id: str
    eventId: str
    eventType: str
    attempt: int
    status: str
    responseCode: int | None
    durationMs: int | None
    responseSnippet: str | None
    error: str | None
    createdAt: str
    nextAttemptAt: str | None


class Accepted(BaseModel):
    eventId: str


class Replay(BaseModel):
    deliveryId: str
    attempt: int


def _webhook(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"], "url": row["url"], "events": list(row["events"]),
        "description": row["description"], "enabled": row["enabled"],
        "disabledReason": row["disabled_reason"],
        "createdAt": iso(row["created_at"]), "updatedAt": iso(row["updated_at"]),
    }


def _delivery(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"], "eventId": row["event_id"], "eventType": row["event_type"],
        "attempt": row["attempt"], "status": row["status"], "responseCode": row["response_code"],
        "durationMs": row["duration_ms"], "responseSnippet": row["response_snippet"],
        "error": row["error"], "createdAt": iso(row["created_at"]),
        "nextAttemptAt": iso(row["next_attempt_at"]),
    }


async def _check(request: web.Request, url: str | None, names: list[str] | None) -> None:
    details: list[dict[str, str]] = []
    if names is not None:
        for i, name in enumerate(names):
            if name in unknown_events([name]):
                details.append({"field": f"events[{i}]", "message": f"Unknown event type {name!r}"})
    if url is not None:
        allow = request.app[CTX].settings.webhooks_allow_private
        details += [{"field": "url", "message": m} for m in await check_url_async(url, allow_private=allow)]
    if details:
        raise BadRequest(details=details)


async def _owned(request: web.Request) -> tuple[str, asyncpg.Record]:
    ws = await workspace_of(request)
    row = await db.get_endpoint(request.app[CTX].pool, ws, request.match_info["id"])
    if row is None:
        raise NotFound("Webhook not found")
    return ws, row


@endpoint(routes, "POST", "/v1/webhooks", summary="Register a webhook endpoint", tag="webhooks",
          body=WebhookCreate, response=WebhookCreated, status=201)
async def create_webhook(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    body = await read_body(request, WebhookCreate)
    await _check(request, body.url, body.events)
    ctx = request.app[CTX]
    secret = signing.new_secret()
    row = await db.create_endpoint(
        ctx.pool, workspace_id=ws, url=body.url, events=list(dict.fromkeys(body.events)),
        description=body.description, enabled=body.enabled, secret_enc=ctx.vault.encrypt(secret),
    )
    return ok({**_webhook(row), "secret": secret}, 201)


@endpoint(routes, "GET", "/v1/webhooks", summary="List webhook endpoints", tag="webhooks",
          query=Page, response=Webhook, envelope="list")
async def list_webhooks(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    page = read_query(request, Page)
    rows = await db.list_endpoints(
        request.app[CTX].pool, ws, after=decode(page.cursor), limit=page.limit + 1
    )
    items, cursor = page_of(rows, page.limit)
    return ok_list([_webhook(r) for r in items], cursor)


@endpoint(routes, "GET", "/v1/webhooks/{id}", summary="Get a webhook endpoint", tag="webhooks",
          response=Webhook)
async def get_webhook(request: web.Request) -> web.Response:
    _, row = await _owned(request)
    return ok(_webhook(row))


@endpoint(routes, "PATCH", "/v1/webhooks/{id}", summary="Update a webhook endpoint",
          tag="webhooks", body=WebhookUpdate, response=Webhook)
async def update_webhook(request: web.Request) -> web.Response:
    ws, _ = await _owned(request)
    body = await read_body(request, WebhookUpdate)
    changes = {k: getattr(body, k) for k in body.model_fields_set}
    for name in ("url", "events", "enabled"):
        if name in changes and changes[name] is None:
            raise BadRequest(details=[{"field": name, "message": "Must not be null"}])
    await _check(request, changes.get("url"), changes.get("events"))
    if "events" in changes:
        changes["events"] = list(dict.fromkeys(changes["events"]))
    row = await db.update_endpoint(request.app[CTX].pool, ws, request.match_info["id"], changes)
    if row is None:
        raise NotFound("Webhook not found")
    return ok(_webhook(row))


@endpoint(routes, "DELETE", "/v1/webhooks/{id}", summary="Delete a webhook endpoint",
          tag="webhooks", status=204, envelope="none")
async def delete_webhook(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    if not await db.delete_endpoint(request.app[CTX].pool, ws, request.match_info["id"]):
        raise NotFound("Webhook not found")
    return no_content()


@endpoint(routes, "POST", "/v1/webhooks/{id}/rotate-secret", summary="Rotate the signing secret",
          tag="webhooks", response=Secret)
async def rotate_secret(request: web.Request) -> web.Response:
    ws, _ = await _owned(request)
    ctx = request.app[CTX]
    secret = signing.new_secret()
    if not await db.rotate_secret(
        ctx.pool, ws, request.match_info["id"], ctx.vault.encrypt(secret), ROTATION_OVERLAP_SECONDS
    ):
        raise NotFound("Webhook not found")
    return ok({"secret": secret})


@endpoint(routes, "GET", "/v1/webhooks/{id}/deliveries", summary="List delivery attempts",
          tag="webhooks", query=Page, response=Delivery, envelope="list")
async def list_deliveries(request: web.Request) -> web.Response:
    _, row = await _owned(request)
    page = read_query(request, Page)
    rows = await db.list_deliveries(
        request.app[CTX].pool, row["id"], before=decode(page.cursor), limit=page.limit + 1
    )
    items, cursor = page_of(rows, page.limit)
    return ok_list([_delivery(r) for r in items], cursor)


@endpoint(routes, "POST", "/v1/webhooks/{id}/deliveries/{deliveryId}/retry",
          summary="Send an event to the endpoint again", tag="webhooks", response=Replay, status=202)
async def retry_delivery(request: web.Request) -> web.Response:
    _, hook = await _owned(request)
    pool = request.app[CTX].pool
    found = await db.get_delivery(pool, hook["id"], request.match_info["deliveryId"])
    if found is None or not await db.payload_exists(pool, found["event_id"]):
        raise NotFound("Delivery not found")
    async with pool.acquire() as conn, conn.transaction():
        row = await db.add_manual_attempt(conn, hook["id"], found["event_id"], found["event_type"])
    return ok({"deliveryId": row["id"], "attempt": row["attempt"]}, 202)


@endpoint(routes, "POST", "/v1/webhooks/{id}/test", summary="Send a webhook.test event",
          tag="webhooks", response=Accepted, status=202)
async def test_webhook(request: web.Request) -> web.Response:
    ws, hook = await _owned(request)
    ctx = request.app[CTX]
    async with ctx.pool.acquire() as proxy, proxy.transaction():
        event, row_id = await events.stage(
            cast(asyncpg.Connection, proxy), "webhook.test", ws,
            {"webhookId": hook["id"], "url": hook["url"]},
        )
    try:
        await outbox.publish_rows(ctx.pool, ctx.publisher, [row_id])
    except Exception as exc:  # staged: the scheduler's outbox relay publishes it
        log.warning("webhook_test_publish_deferred", error=repr(exc))
    return ok({"eventId": event["id"]}, 202)
