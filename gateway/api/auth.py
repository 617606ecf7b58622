"""Who is calling: API key → Principal, and the workspace a request acts in.

`principal` checks the key against PostgreSQL on every request (a revoked key is 401 at
once). The send endpoint may instead defer that check to the router, which does it in the
statement that reads the identity anyway (`deferred_workspace`): for that it only needs to
know which workspace the key claims, and a key's kind, operator and workspace never change
(keys are revoked, never edited or deleted), so the principals of keys that passed a full
check are remembered per process for routing — never as proof that a key is still valid.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from aiohttp import web

from gateway import keys
from gateway.api.context import CTX
from gateway.db import workspaces as db
from gateway.errors import BadRequest, Forbidden, NotFound, Unauthorized
from gateway.keys import KeyCheck


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
# prefix → principal of keys that passed a full check here: routing facts only (see above).
_KNOWN: dict[str, Principal] = {}
_KNOWN_MAX = 10_000


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
    if len(_KNOWN) >= _KNOWN_MAX:
        _KNOWN.clear()
    _KNOWN[found.prefix] = found
    return found


async def deferred_workspace(request: web.Request) -> tuple[str, KeyCheck | None]:
    """The workspace the request acts in, and the key check still owed by whoever does the
    work: (workspace, None) after a full check here (`workspace_of`), or — for a key that
    passed a full check in this process before — (the workspace it claims, its `KeyCheck`)
    without a round trip. The owed check must answer exactly as `workspace_of` would (401 for
    an unknown, revoked or wrong key; 404 for a workspace the platform key does not own), and
    any other error found before it must first run `workspace_of`, so 401 keeps precedence.
    """
    key = _presented_key(request)
    if not key or not keys.well_formed(key):
        raise Unauthorized()
    known = _KNOWN.get(keys.public_prefix(key))
    ws = None
    if known is not None:
        ws = known.workspace_id or request.headers.get("X-Workspace-Id", "").strip()
    if not ws:  # never seen here, or a platform key without X-Workspace-Id: the full check
        return await workspace_of(request), None
    structlog.contextvars.bind_contextvars(workspace_id=ws)
    return ws, KeyCheck.of(key)


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
