"""The aiohttp application: `create_app(settings)`; resources owned by a cleanup context."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from gateway.api.context import CTX, ApiContext
from gateway.api.middleware import request_context
from gateway.api.routes import setup_routes
from gateway.bus.publisher import Publisher
from gateway.bus.topology import Topology, connect
from gateway.config import Settings
from gateway.crypto import Vault
from gateway.db.pool import create_pool


def create_app(settings: Settings) -> web.Application:
    # aiohttp enforces its own cap too; JSON bodies are checked against max_body_bytes in
    # bodies.py, uploads against max_attachment_bytes, so allow the larger of the two here.
    client_max = max(settings.max_body_bytes, settings.max_attachment_bytes) + 64 * 1024
    app = web.Application(middlewares=[request_context], client_max_size=client_max)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        pool = await create_pool(settings.database_url, max_size=settings.db_pool_size)
        amqp = await connect(settings, "api")
        try:
            topology = Topology(settings)
            channel = await amqp.channel()
            await topology.declare(channel)
            await channel.close()
            publisher = await Publisher.open(amqp, topology)
            app[CTX] = ApiContext(
                settings=settings, pool=pool, amqp=amqp, publisher=publisher,
                topology=topology, vault=Vault(settings.secret_keys()),
            )
            for hook in STARTUP_HOOKS:
                await hook(app)
            yield
            for hook in SHUTDOWN_HOOKS:
                await hook(app)
        finally:
            await amqp.close()
            await pool.close()

    app.cleanup_ctx.append(resources)
    setup_routes(app)
    return app


# Features that need extra resources (e.g. the send RPC client) register start/stop hooks.
Hook = Callable[[web.Application], Awaitable[None]]
STARTUP_HOOKS: list[Hook] = []
SHUTDOWN_HOOKS: list[Hook] = []
