"""Asynchronous jobs (forwards): `GET /api/jobs/{jobId}` and its `/v1` alias, workspace-scoped."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from gateway.api.auth import workspace_of
from gateway.api.context import CTX
from gateway.api.openapi import endpoint
from gateway.api.responses import ok
from gateway.db import inbox as db
from gateway.errors import NotFound
from gateway.inbox import views

routes = web.RouteTableDef()


class Job(BaseModel):
    jobId: str
    type: str
    status: str
    result: dict[str, object] | None
    error: str | None
    createdAt: str
    updatedAt: str


async def _job(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    row = await db.get_job(request.app[CTX].pool, ws, request.match_info["jobId"])
    if row is None:
        raise NotFound("Job not found")
    return ok(views.job_view(row))


@endpoint(routes, "GET", "/api/jobs/{jobId}", summary="A job's status", tag="jobs", response=Job)
async def get_job(request: web.Request) -> web.Response:
    return await _job(request)


@endpoint(routes, "GET", "/v1/jobs/{jobId}", summary="A job's status", tag="jobs", response=Job)
async def get_job_v1(request: web.Request) -> web.Response:
    return await _job(request)
