"""The dispatcher never starts an attempt whose lease is nearly spent: its slot goes on."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

from gateway.config import Settings
from gateway.webhooks.dispatch import Dispatcher
from gateway.webhooks.recorder import Attempt


def attempt(n: int, deadline: float, endpoint: str = "whk_a") -> Attempt:
    return Attempt(f"dlv_{n}", endpoint, f"evt_{n}", "email.sent", 1, datetime.now(UTC), "ws_1",
                   "http://127.0.0.1/hook", True, None, b"{}", deadline)


def dispatcher(per_endpoint: int) -> tuple[Dispatcher, list[str]]:
    settings = Settings(webhook_timeout=10, webhook_concurrency_per_endpoint=per_endpoint)
    d = Dispatcher(settings, cast(Any, None), cast(Any, None), cast(Any, None))
    started: list[str] = []
    d._spawn = lambda a: started.append(a.id)  # type: ignore[method-assign]
    return d, started


async def test_a_stale_queued_attempt_hands_its_slot_to_the_next() -> None:
    d, started = dispatcher(per_endpoint=1)
    now = asyncio.get_running_loop().time()
    fresh, margin = now + d.lease_seconds, d.start_margin
    cap = d.capacity
    assert cap.admit("whk_a") is not None  # the slot
    for _ in range(3):
        assert cap.admit("whk_a") is not None  # three queue places
    stale = [attempt(1, now + margin - 1), attempt(2, now + 0.5)]  # waited too long
    for a in [*stale, attempt(3, fresh)]:
        assert cap.enqueue("whk_a", a) == []
    d._start(attempt(0, fresh))
    assert started == ["dlv_0"]
    handed = cap.release("whk_a")  # the POST of dlv_0 ended
    assert handed is not None and handed.id == "dlv_1"
    d._start(handed)
    assert started == ["dlv_0", "dlv_3"]  # dlv_1 and dlv_2 are left to the claim loop
    assert cap.busy == {"whk_a": 1} and cap.queued("whk_a") == 0
    assert d.wake.is_set() and d._soonest is not None  # the claim loop looks again when due


async def test_a_stale_attempt_frees_the_slot_for_another_endpoint() -> None:
    d, started = dispatcher(per_endpoint=1)
    d.capacity.global_limit = 1
    now = asyncio.get_running_loop().time()
    assert d.capacity.admit("whk_a") is not None
    d._start(attempt(1, now))
    assert started == [] and d.capacity.total == 0
