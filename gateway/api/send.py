"""`POST /v1/identities/{handle}/send`: validate, authenticate, claim the idempotency key,
then hand the command to the router over AMQP RPC and return its answer as is.

Keyless sends with an API key this process has checked before leave the key check to the
router (`gateway.api.auth.deferred_workspace`), so they cost the API no database round trip."""

from __future__ import annotations

import secrets

import orjson
from aiohttp import web

from gateway.api.app import SHUTDOWN_HOOKS, STARTUP_HOOKS
from gateway.api.auth import deferred_workspace, workspace_of
from gateway.api.bodies import parse_model, read_raw_json
from gateway.api.context import CTX
from gateway.api.openapi import endpoint
from gateway.bus import rpc
from gateway.bus.topology import COMMANDS
from gateway.db import idempotency as idemdb
from gateway.errors import GatewayError
from gateway.keys import KeyCheck
from gateway.send import idempotency
from gateway.send.handler import ordered
from gateway.send.models import SendRequest, SendResponse, prepare

routes = web.RouteTableDef()

RETRY_AFTER = "1"


@endpoint(routes, "POST", "/v1/identities/{handle}/send", summary="Send (new conversation or reply)",
          tag="send", body=SendRequest, response=SendResponse, status=202, envelope="bare")
async def send(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    key = request.headers.get(idempotency.HEADER)
    # Without an Idempotency-Key nothing here touches PostgreSQL: a key seen before is checked
    # by the router in its identity read (gateway.api.auth.deferred_workspace).
    key_check: KeyCheck | None = None
    if key is None:
        workspace_id, key_check = await deferred_workspace(request)
    else:
        workspace_id = await workspace_of(request)
    handle = request.match_info["handle"]
    try:
        raw = await read_raw_json(request)
        prepare(parse_model(SendRequest, raw), workspace_id)
    except GatewayError:
        if key_check is not None:
            await workspace_of(request)  # 401 / 404 before the body's errors
        raise
    body = orjson.loads(raw)
    scope: str | None = None
    if key is not None:
        digest = idempotency.request_hash(body)
        idempotency.check_key(key)
        stale = 2 * ctx.settings.rpc_timeout
        scope, stored = await idempotency.begin(ctx.pool, workspace_id, handle, key, digest, stale)
        if stored is not None:
            return _response(stored.status, orjson.dumps(ordered(stored.body)), replayed=True)
    body["workspaceId"] = workspace_id
    body["identity"] = handle
    client = ctx.send_rpc
    assert client is not None
    try:
        reply = await client.call(
            COMMANDS, "send", orjson.dumps(body), wait=ctx.settings.rpc_timeout,
            message_id=key or f"api:{secrets.token_hex(16)}", headers=_headers(key_check),
        )
    except rpc.RpcTimeout as exc:
        if scope is not None and key is not None:
            await idemdb.release(ctx.pool, scope, key)
        exc.headers["Retry-After"] = RETRY_AFTER
        raise
    if scope is not None and key is not None and reply.status not in (202, 429):
        await idemdb.release(ctx.pool, scope, key)  # errors are not stored: a retry re-runs
    replayed = key is not None and bool(reply.headers.get(rpc.REPLAYED_HEADER))
    return _response(reply.status, reply.body, replayed=replayed)


def _headers(key_check: KeyCheck | None) -> dict[str, str]:
    if key_check is None:
        return {rpc.ORIGIN_HEADER: "api"}
    return {rpc.ORIGIN_HEADER: "api", rpc.KEY_HEADER: key_check.encode()}


def _response(status: int, body: bytes, *, replayed: bool) -> web.Response:
    headers = {idempotency.REPLAYED: "true"} if replayed else None
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


async def _open_rpc(app: web.Application) -> None:
    ctx = app[CTX]
    ctx.send_rpc = await rpc.RpcClient.open(ctx.amqp, ctx.topology)


async def _close_rpc(app: web.Application) -> None:
    ctx = app[CTX]
    if ctx.send_rpc is not None:
        await ctx.send_rpc.close()
        ctx.send_rpc = None


STARTUP_HOOKS.append(_open_rpc)
SHUTDOWN_HOOKS.append(_close_rpc)
