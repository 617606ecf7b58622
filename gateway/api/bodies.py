"""Reading requests: JSON bodies (415/413/400 rules) and query strings into pydantic models."""

from __future__ import annotations

from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from gateway.api.context import CTX
from gateway.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from gateway.validation import error_details

M = TypeVar("M", bound=BaseModel)


async def read_raw_json(request: web.Request, *, optional: bool = False) -> bytes:
    limit = request.app[CTX].settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"The request body exceeds {limit} bytes")
    has_body = request.body_exists
    if not has_body:
        if optional:
            return b"{}"
        raise BadRequest("A JSON body is required")
    if request.content_type != "application/json":
        raise UnsupportedMediaType()
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise PayloadTooLarge(f"The request body exceeds {limit} bytes")
    if not raw.strip():
        if optional:
            return b"{}"
        raise BadRequest("A JSON body is required")
    return raw


def parse_model(model: type[M], raw: bytes) -> M:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors()
        if any(e["type"] == "json_invalid" for e in errors):
            raise BadRequest("Malformed JSON") from None
        if any(e["type"] == "model_type" and not e["loc"] for e in errors):
            raise BadRequest("The JSON body must be an object") from None
        raise BadRequest(details=error_details(errors)) from None


async def read_body(request: web.Request, model: type[M], *, optional: bool = False) -> M:
    return parse_model(model, await read_raw_json(request, optional=optional))


def read_query(request: web.Request, model: type[M]) -> M:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise BadRequest(details=error_details(exc.errors())) from None
