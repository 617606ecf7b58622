"""OpenAPI 3.1, generated from the same pydantic models that validate requests.

Handlers are registered through `endpoint()`, which records each operation here; the
document is built from those records, so there is no second description to maintain.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    tag: str
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    envelope: str  # "inbox" ({"success", "data"}), "list", "bare" or "none"
    public: bool


OPERATIONS: list[Operation] = []


def endpoint(
    routes: web.RouteTableDef,
    method: str,
    path: str,
    *,
    summary: str,
    tag: str,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    envelope: str = "inbox",
    public: bool = False,
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        OPERATIONS.append(
            Operation(method, path, summary, tag, body, query, response, status, envelope, public)
        )
        routes.route(method, path)(handler)
        return handler

    return register


def _ref(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        schemas[name] = sub
    schemas[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _wrap(envelope: str, inner: dict[str, Any]) -> dict[str, Any]:
    if envelope == "inbox":
        return {"type": "object", "properties": {"success": {"const": True}, "data": inner}}
    if envelope == "list":
        return {
            "type": "object",
            "properties": {
                "success": {"const": True},
                "data": {"type": "array", "items": inner},
                "nextCursor": {"type": ["string", "null"]},
            },
        }
    return inner


def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error", "message", "code"],
            "properties": {
                "error": {"type": "string"},
                "message": {"type": "string"},
                "code": {"type": "integer"},
                "details": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                    },
                },
            },
        }
    }
    paths: dict[str, Any] = {}
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for op in OPERATIONS:
        item: dict[str, Any] = {"summary": op.summary, "tags": [op.tag], "responses": {}}
        if op.public:
            item["security"] = []
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _path_params(op.path)
        ]
        if op.query is not None:
            for name, field in op.query.model_fields.items():
                params.append({"name": field.alias or name, "in": "query", "required": False,
                               "schema": {"type": "string"}})
        if params:
            item["parameters"] = params
        if op.body is not None:
            item["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(op.body, schemas)}},
            }
        if op.status == 204 or op.envelope == "none":
            item["responses"][str(op.status)] = {"description": "Success"}
        else:
            inner = _ref(op.response, schemas) if op.response is not None else {"type": "object"}
            item["responses"][str(op.status)] = {
                "description": "Success",
                "content": {"application/json": {"schema": _wrap(op.envelope, inner)}},
            }
        for code in ("400", "401", "403", "404"):
            item["responses"][code] = {"description": "Error", **error}
        paths.setdefault(_openapi_path(op.path), {})[op.method.lower()] = item
    return {
        "openapi": "3.1.0",
        "info": {"title": "mailgw", "version": "1.0.0"},
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"apiKey": []}, {"bearer": []}],
        "paths": paths,
    }


def _path_params(path: str) -> list[str]:
    return [seg[1:-1].split(":")[0] for seg in path.split("/") if seg.startswith("{")]


def _openapi_path(path: str) -> str:
    return "/".join(
        "{" + seg[1:-1].split(":")[0] + "}" if seg.startswith("{") else seg for seg in path.split("/")
    )
