"""The scheduler role: due scheduled replies → messages + deliver tasks; relays unpublished outbox rows.

Several schedulers may run: each due reply is claimed with `FOR UPDATE SKIP LOCKED`, and the
outbox relay claims its rows the same way, so nothing is sent twice. `sendAt` sends need no
work of their own: their deliver task sits in the outbox until `available_at`, then the relay
publishes it.
"""

from __future__ import annotations

import asyncio
import contextlib

from consumers.runner import Context
from gateway import outbox
from gateway.inbox.service import Deps, send_due_reply
from gateway.logging import get_logger

log = get_logger(__name__)

BATCH = 100  # scheduled replies per tick before relaying, so one backlog cannot starve the other


async def tick(deps: Deps) -> tuple[int, int]:
    """One pass: send what is due, then relay the outbox. Returns (replies sent, rows relayed)."""
    replies = 0
    while replies < BATCH and await send_due_reply(deps):
        replies += 1
    relayed = 0
    while (n := await outbox.relay_due(deps.pool, deps.publisher,
                                       grace_seconds=deps.settings.outbox_grace)) > 0:
        relayed += n
        if relayed >= 10 * BATCH:
            break
    return replies, relayed


async def run(ctx: Context, stop: asyncio.Event) -> None:
    deps = Deps.of(ctx)
    interval = ctx.settings.scheduler_interval
    log.info("scheduler_started", interval=interval)
    while not stop.is_set():
        try:
            replies, relayed = await tick(deps)
            if replies or relayed:
                log.info("scheduler_tick", replies=replies, relayed=relayed)
        except Exception as exc:  # a database or broker hiccup: log and try again next tick
            log.warning("scheduler_tick_failed", error=repr(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
    log.info("scheduler_stopped")
