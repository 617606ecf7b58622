"""Run as a subprocess: make a real inbox reply, then hang between commit and publish (to be killed)."""

from __future__ import annotations

import asyncio
import sys

from consumers.runner import open_context
from gateway.config import load_settings
from gateway.inbox import service
from gateway.inbox.models import ReplyRequest


async def _stuck(deps: service.Deps, outbox_ids: list[int]) -> None:
    print(f"COMMITTED {outbox_ids[0]}", flush=True)
    await asyncio.Event().wait()  # the parent kills us here: committed, never published


async def main(workspace_id: str, conv_id: str) -> None:
    ctx = await open_context(load_settings(), "crash-writer")
    service.publish = _stuck  # type: ignore[assignment]
    await service.reply(service.Deps.of(ctx), workspace_id, conv_id, ReplyRequest(body="crash test"))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
