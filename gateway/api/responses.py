"""Response helpers: orjson bodies, the inbox envelope, lists with cursors, 204s."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def ok(data: Any, status: int = 200) -> web.Response:
    """The inbox-style envelope: {"success": true, "data": …}."""
    return json_response({"success": True, "data": data}, status)


def ok_list(items: list[Any], next_cursor: str | None) -> web.Response:
    return json_response({"success": True, "data": items, "nextCursor": next_cursor})


def no_content() -> web.Response:
    return web.Response(status=204)
