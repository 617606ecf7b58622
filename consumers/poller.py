"""The poller role: lease mailboxes, watch each leased mailbox folder in its own task."""

from __future__ import annotations

import asyncio
import contextlib

from consumers.runner import Context
from gateway.inbound.ingest import Ingestor
from gateway.inbound.leases import LeaseManager, new_owner
from gateway.inbound.watcher import Watcher
from gateway.logging import get_logger
from gateway.storage import DirectoryStorage

log = get_logger(__name__)


async def run(ctx: Context, stop: asyncio.Event) -> None:
    settings = ctx.settings
    leases = LeaseManager(ctx.pool, new_owner(), settings.lease_seconds)
    ingestor = Ingestor(ctx.pool, DirectoryStorage(settings.attachments_path), settings.public_url,
                        ctx.publisher, lease_owner=leases.owner)
    watchers: dict[str, list[asyncio.Task[None]]] = {}
    tick = max(0.2, settings.lease_seconds / 3)
    log.info("poller_started", owner=leases.owner, lease_seconds=settings.lease_seconds)

    async def stop_watching(mailbox_ids: list[str]) -> None:
        tasks = [t for m in mailbox_ids for t in watchers.pop(m, [])]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        while not stop.is_set():
            try:
                changes = await leases.tick()
                await stop_watching(changes.lost)
                if changes.to_release:
                    await stop_watching(changes.to_release)
                    await leases.release(changes.to_release)
                for mailbox_id in changes.acquired:
                    watchers[mailbox_id] = [
                        asyncio.create_task(
                            Watcher(settings, ctx.pool, ctx.vault, ctx.publisher, ingestor,
                                    mailbox_id, folder).run(),
                            name=f"watch:{mailbox_id}:{folder}",
                        )
                        for folder in settings.imap_folders
                    ]
                if changes.acquired or changes.lost or changes.to_release:
                    log.info("poller_leases", owner=leases.owner, held=len(leases.held),
                             acquired=changes.acquired, lost=changes.lost, released=changes.to_release)
                # A watcher that ended (mailbox paused or gone) gives its lease back.
                done = [m for m, ts in watchers.items() if all(t.done() for t in ts)]
                if done:
                    await stop_watching(done)
                    await leases.release(done)
            except Exception as exc:  # the database is away: keep trying, watchers are fenced
                log.warning("poller_tick_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=tick)
    finally:
        await stop_watching(list(watchers))
        with contextlib.suppress(Exception):
            await leases.release_all()
        log.info("poller_stopped", owner=leases.owner)
