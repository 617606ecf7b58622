"""RFC 8058 one-click unsubscribe: the URL delivery puts in List-Unsubscribe (no auth, no redirect).

POST (body `List-Unsubscribe=One-Click`, or empty) suppresses the recipient in the workspace
with reason `unsubscribed` and emits `lead.unsubscribed` the first time the token is used.
GET only shows a page whose button POSTs: link scanners that follow URLs unsubscribe no one.
"""

from __future__ import annotations

from typing import Any, cast

import asyncpg
from aiohttp import web

from gateway import events, outbox
from gateway.api.context import CTX
from gateway.api.openapi import endpoint
from gateway.api.responses import ok
from gateway.errors import BadRequest, NotFound
from gateway.logging import get_logger

log = get_logger(__name__)
routes = web.RouteTableDef()

_MAX_BODY = 4096
_ONE_CLICK = "List-Unsubscribe=One-Click"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Unsubscribe</title></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 4em auto">
<h1>Unsubscribe</h1>
{content}
</body></html>
"""
_FORM = """<p>Stop receiving these emails?</p>
<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button></form>"""
_DONE = "<p>You have been unsubscribed. You will not receive further emails from this sender.</p>"


def _html(content: str) -> web.Response:
    return web.Response(text=_PAGE.format(content=content), content_type="text/html",
                        headers={"Cache-Control": "no-store"})


def _token(request: web.Request) -> str:
    token = request.match_info["token"]
    if not token or len(token) > 128:
        raise NotFound("Unknown unsubscribe link")
    return token


@endpoint(routes, "GET", "/v1/unsubscribe/{token}", summary="Unsubscribe confirmation page",
          tag="unsubscribe", envelope="none", public=True)
async def unsubscribe_page(request: web.Request) -> web.Response:
    token = _token(request)
    found = await request.app[CTX].pool.fetchval(
        "SELECT 1 FROM unsubscribe_tokens WHERE token = $1", token
    )
    if not found:
        raise NotFound("Unknown unsubscribe link")
    return _html(_FORM)


@endpoint(routes, "POST", "/v1/unsubscribe/{token}", summary="One-click unsubscribe (RFC 8058)",
          tag="unsubscribe", public=True)
async def unsubscribe(request: web.Request) -> web.Response:
    token = _token(request)
    if (request.content_length or 0) > _MAX_BODY:
        raise BadRequest("The unsubscribe body must be List-Unsubscribe=One-Click")
    body = (await request.content.read(_MAX_BODY + 1)).decode("utf-8", "replace")
    if body.strip() and _ONE_CLICK not in body:
        raise BadRequest("The unsubscribe body must be List-Unsubscribe=One-Click")
    ctx = request.app[CTX]
    async with ctx.pool.acquire() as proxy, proxy.transaction():
        conn = cast(asyncpg.Connection, proxy)
        row = await conn.fetchrow(
            "WITH old AS (SELECT token, used_at FROM unsubscribe_tokens WHERE token = $1 FOR UPDATE)"
            " UPDATE unsubscribe_tokens t SET used_at = COALESCE(t.used_at, now()) FROM old"
            " WHERE t.token = old.token"
            " RETURNING t.workspace_id, t.email, t.message_id, t.conversation_id,"
            "  old.used_at IS NULL AS first",
            token,
        )
        if row is None:
            raise NotFound("Unknown unsubscribe link")
        email = row["email"].lower()
        await conn.execute(
            "INSERT INTO suppressions (workspace_id, email, reason) VALUES ($1, $2, 'unsubscribed')"
            " ON CONFLICT (workspace_id, email) DO NOTHING",
            row["workspace_id"], email,
        )
        outbox_id: int | None = None
        if row["first"]:
            data = await _event_data(conn, row)
            _, outbox_id = await events.stage(conn, "lead.unsubscribed", row["workspace_id"], data)
    if outbox_id is not None:
        try:
            await outbox.publish_rows(ctx.pool, ctx.publisher, [outbox_id])
        except Exception as exc:  # committed: the scheduler's outbox relay publishes it later
            log.warning("unsubscribe_event_publish_deferred", error=repr(exc))
    if "text/html" in request.headers.get("Accept", ""):
        return _html(_DONE)
    return ok({"email": email, "unsubscribed": True})


async def _event_data(conn: asyncpg.Connection, row: asyncpg.Record) -> dict[str, Any]:
    data: dict[str, Any]
    try:
        data = await events.message_event_data(conn, row["message_id"] or "")
    except LookupError:  # the message is gone; the address is what matters
        data = {"conversationId": row["conversation_id"], "identity": None,
                "mailbox": {"id": None, "email": None}, "messageId": row["message_id"],
                "metadata": {}}
    data["email"] = row["email"].lower()
    return data
