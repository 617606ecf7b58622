"""Suppressions (setup API): the workspace's do-not-send list."""

from __future__ import annotations

from typing import Any, Literal

import asyncpg
from aiohttp import web
from pydantic import BaseModel

from gateway.api.auth import workspace_of
from gateway.api.bodies import read_body, read_query
from gateway.api.context import CTX
from gateway.api.openapi import endpoint
from gateway.api.pagination import Page, decode, page_of
from gateway.api.responses import no_content, ok, ok_list
from gateway.db import suppressions as db
from gateway.errors import NotFound
from gateway.timefmt import iso
from gateway.validation import Body, Email, normalize_email

routes = web.RouteTableDef()

Reason = Literal["manual", "unsubscribed", "hard_bounce"]


class SuppressionCreate(Body):
    email: Email
    reason: Reason = "manual"


class Suppression(BaseModel):
    email: str
    reason: Reason
    createdAt: str


def view(row: asyncpg.Record) -> dict[str, Any]:
    return {"email": row["email"], "reason": row["reason"], "createdAt": iso(row["created_at"])}


@endpoint(routes, "GET", "/v1/suppressions", summary="List suppressed addresses", tag="admin",
          query=Page, response=Suppression, envelope="list")
async def list_suppressions(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    page = read_query(request, Page)
    rows = await db.list_page(request.app[CTX].pool, ws, after=decode(page.cursor), limit=page.limit + 1)
    items, cursor = page_of(list(rows), page.limit)
    return ok_list([view(r) for r in items], cursor)


@endpoint(routes, "POST", "/v1/suppressions",
          summary="Suppress an address (201 when new, 200 with the reason updated when present)",
          tag="admin", body=SuppressionCreate, response=Suppression, status=201)
async def add_suppression(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    body = await read_body(request, SuppressionCreate)
    row, created = await db.add(request.app[CTX].pool, ws, body.email, body.reason)
    return ok(view(row), 201 if created else 200)


@endpoint(routes, "DELETE", "/v1/suppressions/{email}", summary="Remove an address from the list",
          tag="admin", status=204, envelope="none")
async def remove_suppression(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    try:
        email = normalize_email(request.match_info["email"])
    except ValueError:
        raise NotFound() from None
    if not await db.remove(request.app[CTX].pool, ws, email):
        raise NotFound()
    return no_content()
