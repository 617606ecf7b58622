"""What every HTTP handler can reach, behind one typed AppKey."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from aio_pika.abc import AbstractRobustConnection
from aiohttp import web

from gateway.bus.publisher import Publisher
from gateway.bus.rpc import RpcClient
from gateway.bus.topology import Topology
from gateway.config import Settings
from gateway.crypto import Vault
from gateway.storage import Storage


@dataclass
class ApiContext:
    settings: Settings
    pool: asyncpg.Pool
    amqp: AbstractRobustConnection
    publisher: Publisher
    topology: Topology
    vault: Vault
    send_rpc: RpcClient | None = None  # opened by gateway.api.send's startup hook
    storage: Storage | None = None  # attachment store; None: a directory at settings.attachments_path


CTX = web.AppKey("ctx", ApiContext)
