"""Who is calling: API key → Principal, and the workspace a request acts in."""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from aiohttp import web

from gateway import keys
from gateway.api.context import CTX
from gateway.db import workspaces as db
from gateway.errors import BadRequest, Forbidden, NotFound, Unauthorized


@dataclass(frozen=True)
class Principal:
    kind: str  # "platform" | "workspace"
    prefix: str
    operator_id: str
    workspace_id: str | None

    @property
    def is_platform(self) -> bool:
        return self.kind == "platform"


_PRINCIPAL = web.RequestKey("principal", Principal)


def _presented_key(request: web.Request) -> str | None:
    key = request.headers.get("X-Api-Key")
    if key:
        return key.strip()
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def principal(request: web.Request) -> Principal:
    """401 for no key, an unknown key or a revoked key."""
    cached = request.get(_PRINCIPAL)
    if isinstance(cached, Principal):
        return cached
    key = _presented_key(request)
    if not key or not keys.well_formed(key):
        raise Unauthorized()
    row = await db.key_by_prefix(request.app[CTX].pool, keys.public_prefix(key))
    if row is None or row["revoked_at"] is not None or not keys.matches(key, bytes(row["key_hash"])):
        raise Unauthorized()
    found = Principal(row["kind"], row["prefix"], row["operator_id"], row["workspace_id"])
    request[_PRINCIPAL] = found
    return found


async def require_platform(request: web.Request) -> Principal:
    p = await principal(request)
    if not p.is_platform:
        raise Forbidden("This action needs a platform key (sk_user_…)")
    return p


async def workspace_of(request: web.Request) -> str:
    """The workspace this request acts in: the key's own, or X-Workspace-Id for a platform key."""
    p = await principal(request)
    if p.workspace_id is not None:
        structlog.contextvars.bind_contextvars(workspace_id=p.workspace_id)
        return p.workspace_id
    ws = request.headers.get("X-Workspace-Id", "").strip()
    if not ws:
        raise BadRequest(
            "X-Workspace-Id is required with a platform key",
            details=[{"field": "X-Workspace-Id", "message": "Header required"}],
        )
    await owned_workspace(request, p, ws)
    structlog.contextvars.bind_contextvars(workspace_id=ws)
    return ws


async def owned_workspace(request: web.Request, p: Principal, workspace_id: str) -> None:
    """404 unless the principal may act in this workspace (never reveals that it exists)."""
    if p.workspace_id is not None:
        if p.workspace_id != workspace_id:
            raise NotFound()
        return
    if await db.get_workspace(request.app[CTX].pool, workspace_id, p.operator_id) is None:
        raise NotFound()
