"""What every HTTP handler can reach, behind one typed AppKey."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from aio_pika.abc import AbstractRobustConnection
from aiohttp import web

from gateway.bus.publisher import Publisher
from gateway.bus.topology import Topology
from gateway.config import Settings
from gateway.crypto import Vault


@dataclass
class ApiContext:
    settings: Settings
    pool: asyncpg.Pool
    amqp: AbstractRobustConnection
    publisher: Publisher
    topology: Topology
    vault: Vault


CTX = web.AppKey("ctx", ApiContext)
