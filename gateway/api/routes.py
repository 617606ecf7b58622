"""Every URL of the HTTP API: one list of resource modules, each with its `routes`."""

from __future__ import annotations

import importlib

from aiohttp import web

# Each module defines `routes = web.RouteTableDef()` and registers handlers with `endpoint()`.
MODULES = [
    "gateway.api.attachments",
    "gateway.api.inbox",
    "gateway.api.jobs",
    "gateway.api.ops",
    "gateway.api.send",
    "gateway.api.workspaces",
    "gateway.api.webhooks",
    "gateway.api.unsubscribe",
    "gateway.api.mailboxes",
    "gateway.api.identities",
    "gateway.api.suppressions",
]


def setup_routes(app: web.Application) -> None:
    for name in MODULES:
        module = importlib.import_module(name)
        app.router.add_routes(module.routes)
