"""Operational endpoints: liveness, readiness, Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.context import CTX
from gateway.api.openapi import document, endpoint
from gateway.api.responses import json_response

routes = web.RouteTableDef()


@endpoint(routes, "GET", "/healthz", summary="Process alive", tag="ops", envelope="bare", public=True)
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@endpoint(routes, "GET", "/readyz", summary="Database and broker reachable", tag="ops",
          envelope="bare", public=True)
async def readyz(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    checks = {"database": False, "broker": False}
    try:
        checks["database"] = await ctx.pool.fetchval("SELECT 1", timeout=2) == 1
    except Exception:
        checks["database"] = False
    checks["broker"] = not ctx.amqp.is_closed and not ctx.publisher.channel.is_closed
    ready = all(checks.values())
    return json_response({"status": "ready" if ready else "unavailable", "checks": checks},
                         200 if ready else 503)


@endpoint(routes, "GET", "/metrics", summary="Prometheus metrics", tag="ops", envelope="none",
          public=True)
async def metrics(request: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest())
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


@endpoint(routes, "GET", "/openapi.json", summary="This API in OpenAPI 3.1", tag="ops",
          envelope="bare", public=True)
async def openapi(request: web.Request) -> web.Response:
    return json_response(document())
