"""Identities (setup API): a handle, daily cap, time zone and a pool of mailboxes to send from."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from aiohttp import web
from pydantic import BaseModel, Field

from gateway.api.auth import workspace_of
from gateway.api.bodies import read_body, read_query
from gateway.api.context import CTX
from gateway.api.openapi import endpoint
from gateway.api.pagination import Page, decode, page_of
from gateway.api.responses import no_content, ok, ok_list
from gateway.db import identities as db
from gateway.errors import BadRequest, Conflict, NotFound
from gateway.timefmt import iso
from gateway.validation import Body, Name, TimeZone

routes = web.RouteTableDef()

# Address-like (e.g. alice.acme@example.com); it appears in URLs, so a safe character set.
Handle = Annotated[str, Field(min_length=1, max_length=254, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+@-]*$")]
Cap = Annotated[int, Field(ge=0, le=1_000_000)]
Pool = Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=100)]
DEFAULT_DAILY_CAP = 100


class IdentityCreate(Body):
    handle: Handle
    displayName: Name | None = None
    dailyCap: Cap = DEFAULT_DAILY_CAP
    timezone: TimeZone = "UTC"
    mailboxIds: Pool = Field(default_factory=list)


class IdentityUpdate(Body):
    """Only the fields given change; `mailboxIds` replaces the whole pool."""

    handle: Handle | None = None
    displayName: Name | None = None
    dailyCap: Cap | None = None
    timezone: TimeZone | None = None
    mailboxIds: Pool | None = None


class Identity(BaseModel):
    id: str
    handle: str
    displayName: str | None
    dailyCap: int
    timezone: str
    mailboxIds: list[str]
    createdAt: str
    updatedAt: str


def view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "handle": row["handle"],
        "displayName": row["display_name"],
        "dailyCap": row["daily_cap"],
        "timezone": row["timezone"],
        "mailboxIds": list(row["mailbox_ids"]),
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }


def _check_duplicates(mailbox_ids: list[str]) -> None:
    seen: set[str] = set()
    details = []
    for i, m in enumerate(mailbox_ids):
        if m in seen:
            details.append({"field": f"mailboxIds[{i}]", "message": "Duplicate mailbox id"})
        seen.add(m)
    if details:
        raise BadRequest(details=details)


def _unknown(exc: db.UnknownMailboxes) -> BadRequest:
    return BadRequest(details=[{"field": f"mailboxIds[{i}]", "message": "Unknown mailbox"}
                               for i in exc.indexes])


_DUPLICATE = "An identity with this handle already exists in the workspace"


async def insert(pool: asyncpg.Pool, workspace_id: str, body: IdentityCreate) -> asyncpg.Record:
    """Create from a validated body (shared by the API and `mailgw identity add`)."""
    _check_duplicates(body.mailboxIds)
    try:
        return await db.create(
            pool, workspace_id=workspace_id, handle=body.handle, display_name=body.displayName,
            daily_cap=body.dailyCap, timezone=body.timezone, mailbox_ids=body.mailboxIds,
        )
    except db.DuplicateHandle:
        raise Conflict(_DUPLICATE) from None
    except db.UnknownMailboxes as exc:
        raise _unknown(exc) from None


@endpoint(routes, "POST", "/v1/identities", summary="Create an identity", tag="admin",
          body=IdentityCreate, response=Identity, status=201)
async def create_identity(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    body = await read_body(request, IdentityCreate)
    return ok(view(await insert(request.app[CTX].pool, ws, body)), 201)


@endpoint(routes, "GET", "/v1/identities", summary="List identities", tag="admin",
          query=Page, response=Identity, envelope="list")
async def list_identities(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    page = read_query(request, Page)
    rows = await db.list_page(request.app[CTX].pool, ws, after=decode(page.cursor), limit=page.limit + 1)
    items, cursor = page_of(list(rows), page.limit)
    return ok_list([view(r) for r in items], cursor)


@endpoint(routes, "GET", "/v1/identities/{handle}", summary="Get an identity", tag="admin",
          response=Identity)
async def get_identity(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    row = await db.by_handle(request.app[CTX].pool, ws, request.match_info["handle"])
    if row is None:
        raise NotFound()
    return ok(view(row))


@endpoint(routes, "PATCH", "/v1/identities/{handle}", summary="Update an identity", tag="admin",
          body=IdentityUpdate, response=Identity)
async def update_identity(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    pool = request.app[CTX].pool
    handle = request.match_info["handle"]
    if await db.by_handle(pool, ws, handle) is None:
        raise NotFound()
    body = await read_body(request, IdentityUpdate)
    given = body.model_fields_set
    nulls = [f for f in ("handle", "dailyCap", "timezone", "mailboxIds")
             if f in given and getattr(body, f) is None]
    if nulls:
        raise BadRequest(details=[{"field": f, "message": "May not be null"} for f in nulls])
    changes: dict[str, Any] = {}
    if body.handle is not None:
        changes["handle"] = body.handle
    if "displayName" in given:
        changes["display_name"] = body.displayName
    if body.dailyCap is not None:
        changes["daily_cap"] = body.dailyCap
    if body.timezone is not None:
        changes["timezone"] = body.timezone
    if body.mailboxIds is not None:
        _check_duplicates(body.mailboxIds)
    try:
        row = await db.update(pool, ws, handle, changes, body.mailboxIds)
    except db.DuplicateHandle:
        raise Conflict(_DUPLICATE) from None
    except db.UnknownMailboxes as exc:
        raise _unknown(exc) from None
    if row is None:
        raise NotFound()
    return ok(view(row))


@endpoint(routes, "DELETE", "/v1/identities/{handle}", summary="Delete an identity", tag="admin",
          status=204, envelope="none")
async def delete_identity(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    if not await db.soft_delete(request.app[CTX].pool, ws, request.match_info["handle"]):
        raise NotFound()
    return no_content()
