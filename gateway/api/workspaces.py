"""Workspaces and their API keys (platform-key operations, plus key revocation)."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, Field

from gateway.api.auth import owned_workspace, principal, require_platform
from gateway.api.bodies import read_body, read_query
from gateway.api.context import CTX
from gateway.api.openapi import endpoint
from gateway.api.pagination import Page, decode, page_of
from gateway.api.responses import no_content, ok, ok_list
from gateway.db import workspaces as db
from gateway.errors import Forbidden, NotFound
from gateway.timefmt import iso
from gateway.validation import Body

routes = web.RouteTableDef()


class WorkspaceCreate(Body):
    name: str = Field(min_length=1, max_length=200)


class Workspace(BaseModel):
    id: str
    name: str
    createdAt: str


class KeyCreate(Body):
    name: str | None = Field(default=None, min_length=1, max_length=200)


class KeyCreated(BaseModel):
    key: str
    prefix: str
    name: str | None
    createdAt: str


class KeyInfo(BaseModel):
    prefix: str
    name: str | None
    createdAt: str


def _workspace(row: dict[str, object]) -> dict[str, object]:
    created = row["created_at"]
    assert isinstance(created, datetime)
    return {"id": row["id"], "name": row["name"], "createdAt": iso(created)}


@endpoint(routes, "POST", "/v1/workspaces", summary="Create a workspace", tag="admin",
          body=WorkspaceCreate, response=Workspace, status=201)
async def create_workspace(request: web.Request) -> web.Response:
    p = await require_platform(request)
    body = await read_body(request, WorkspaceCreate)
    row = await db.create_workspace(request.app[CTX].pool, p.operator_id, body.name)
    return ok(_workspace(dict(row)), 201)


@endpoint(routes, "GET", "/v1/workspaces", summary="List workspaces", tag="admin",
          query=Page, response=Workspace, envelope="list")
async def list_workspaces(request: web.Request) -> web.Response:
    p = await require_platform(request)
    page = read_query(request, Page)
    rows = await db.list_workspaces(
        request.app[CTX].pool, p.operator_id, after=decode(page.cursor), limit=page.limit + 1
    )
    items, cursor = page_of([dict(r) for r in rows], page.limit)
    return ok_list([_workspace(r) for r in items], cursor)


@endpoint(routes, "GET", "/v1/workspaces/{id}", summary="Get a workspace", tag="admin",
          response=Workspace)
async def get_workspace(request: web.Request) -> web.Response:
    p = await principal(request)
    ws_id = request.match_info["id"]
    await owned_workspace(request, p, ws_id)
    row = await db.get_workspace(request.app[CTX].pool, ws_id, p.operator_id)
    if row is None:
        raise NotFound()
    return ok(_workspace(dict(row)))


@endpoint(routes, "POST", "/v1/workspaces/{id}/keys", summary="Create a workspace API key",
          tag="admin", body=KeyCreate, response=KeyCreated, status=201)
async def create_key(request: web.Request) -> web.Response:
    p = await principal(request)
    ws_id = request.match_info["id"]
    await owned_workspace(request, p, ws_id)
    if not p.is_platform:
        raise Forbidden("Only a platform key may create workspace keys")
    body = await read_body(request, KeyCreate, optional=True)
    key, row = await db.insert_key(
        request.app[CTX].pool, kind="workspace", operator_id=p.operator_id,
        workspace_id=ws_id, name=body.name,
    )
    return ok({"key": key, "prefix": row["prefix"], "name": row["name"],
               "createdAt": iso(row["created_at"])}, 201)


@endpoint(routes, "GET", "/v1/workspaces/{id}/keys", summary="List a workspace's keys",
          tag="admin", query=Page, response=KeyInfo, envelope="list")
async def list_keys(request: web.Request) -> web.Response:
    p = await principal(request)
    ws_id = request.match_info["id"]
    await owned_workspace(request, p, ws_id)
    page = read_query(request, Page)
    rows = await db.list_keys(
        request.app[CTX].pool, ws_id, after=decode(page.cursor), limit=page.limit + 1
    )
    # The prefix is a key's public id: it is the cursor's tie-breaker.
    items, cursor = page_of([{**dict(r), "id": r["prefix"]} for r in rows], page.limit)
    return ok_list(
        [{"prefix": r["prefix"], "name": r["name"], "createdAt": iso(r["created_at"])} for r in items],
        cursor,
    )


@endpoint(routes, "DELETE", "/v1/keys/{prefix}", summary="Revoke a key", tag="admin",
          status=204, envelope="none")
async def revoke_key(request: web.Request) -> web.Response:
    p = await principal(request)
    pool = request.app[CTX].pool
    row = await db.key_by_prefix(pool, request.match_info["prefix"])
    if row is None or row["revoked_at"] is not None or row["operator_id"] != p.operator_id:
        raise NotFound()
    if p.workspace_id is not None and row["workspace_id"] != p.workspace_id:
        raise NotFound()
    if row["kind"] == "platform" and not p.is_platform:
        raise NotFound()
    await db.revoke_key(pool, row["prefix"])
    return no_content()
