"""Mailbox leases: which poller watches which mailbox, with expiry so dead pollers are replaced.

Every tick a poller (1) announces itself in `poller_heartbeats`, (2) renews the leases it
holds, (3) computes its fair share — ceil(eligible mailboxes / live pollers) — and either
releases what it holds above the share or acquires free and expired leases up to it.
Acquiring is one `INSERT … ON CONFLICT DO UPDATE … WHERE expires_at < now() OR owner = me`
per mailbox, so PostgreSQL decides every race.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
from dataclasses import dataclass, field

import asyncpg

from gateway.db import inbound_leases as leasedb


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass
class LeaseChanges:
    acquired: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # expired, taken, or no longer eligible
    to_release: list[str] = field(default_factory=list)  # above our share: stop, then release


@dataclass
class LeaseManager:
    pool: asyncpg.Pool
    owner: str
    seconds: float
    held: set[str] = field(default_factory=set)

    async def tick(self) -> LeaseChanges:
        changes = LeaseChanges()
        alive = await leasedb.heartbeat(self.pool, self.owner, self.seconds)
        if self.held:
            still = await leasedb.renew_leases(self.pool, self.owner, sorted(self.held), self.seconds)
            changes.lost = sorted(self.held - still)
            if changes.lost:
                await leasedb.release_leases(self.pool, self.owner, changes.lost)
            self.held = still
        share = math.ceil(await leasedb.count_eligible(self.pool) / max(alive, 1))
        if len(self.held) > share:
            changes.to_release = sorted(self.held)[: len(self.held) - share]
        elif len(self.held) < share:
            got = await leasedb.acquire_leases(self.pool, self.owner, share - len(self.held), self.seconds)
            changes.acquired = [m for m in got if m not in self.held]
            self.held.update(got)
        return changes

    async def release(self, mailbox_ids: list[str]) -> None:
        if mailbox_ids:
            await leasedb.release_leases(self.pool, self.owner, mailbox_ids)
        self.held.difference_update(mailbox_ids)

    async def release_all(self) -> None:
        await self.release(sorted(self.held))
        await leasedb.drop_heartbeat(self.pool, self.owner)
