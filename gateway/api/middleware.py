"""Middlewares: request id, metrics, and the one place errors become the SPEC error shape."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable

import asyncpg
import structlog
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from gateway import metrics
from gateway.api.responses import json_response
from gateway.errors import BadRequest, GatewayError, error_body
from gateway.logging import get_logger

log = get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("X-Request-Id", "")
    request_id = given if _REQUEST_ID.match(given) else f"req_{secrets.token_hex(8)}"
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    response = await errors_to_json(request, handler)
    response.headers["X-Request-Id"] = request_id
    route = request.match_info.route.resource
    metrics.observe_http(
        request.method,
        route.canonical if route is not None else "unmatched",
        response.status,
        time.perf_counter() - started,
    )
    return response


def _unstorable(text: str) -> bool:
    """NUL and lone surrogates (undecodable bytes) can never match a stored value."""
    # isascii() first: it runs in C, and ASCII text (almost every header) has no surrogates
    return "\x00" in text or (
        not text.isascii() and any("\ud800" <= ch <= "\udfff" for ch in text)
    )


def _check_characters(request: web.Request) -> None:
    if _unstorable(request.path) or any(
        _unstorable(k) or _unstorable(v) for k, v in request.query.items()
    ):
        raise BadRequest("The URL contains characters that are not allowed (NUL or invalid UTF-8)")
    for name, value in request.headers.items():
        if _unstorable(value):
            raise BadRequest(
                f"The {name} header contains characters that are not allowed",
                details=[{"field": name, "message": "Invalid characters"}],
            )


async def errors_to_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        _check_characters(request)
        return await handler(request)
    except (
        asyncpg.CharacterNotInRepertoireError,
        asyncpg.UntranslatableCharacterError,
        UnicodeEncodeError,
    ):
        # Input text that PostgreSQL cannot store (e.g. "\u0000" inside a JSON string).
        body = error_body(400, "The request contains characters that cannot be stored (NUL or invalid UTF-8)")
        return json_response(body, 400)
    except BadHttpMessage as exc:
        # Malformed multipart part headers and alike, found while reading the body.
        return json_response(error_body(400, f"Malformed request: {exc.message}"), 400)
    except GatewayError as exc:
        return json_response(exc.body(), exc.status, headers=exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = {
            404: "Resource not found",
            405: "Method not allowed",
            413: "The request body is too large",
        }.get(exc.status, exc.reason)
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return json_response(error_body(exc.status, message), exc.status, headers=headers)
    except Exception:
        log.exception("unhandled_error", path=request.path, method=request.method)
        return json_response(error_body(500, "An unexpected error occurred"), 500)
