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


def slot_dispatcher(per_endpoint: int) -> tuple[Dispatcher, list[str], list[str]]:
    """A dispatcher whose POSTs all succeed at once: (dispatcher, attempts run, tasks spawned)."""
    settings = Settings(webhook_timeout=10, webhook_concurrency_per_endpoint=per_endpoint)
    d = Dispatcher(settings, cast(Any, None), cast(Any, None), cast(Any, None))
    ran: list[str] = []
    spawned: list[str] = []

    async def deliver(a: Attempt, release: Any) -> Attempt | None:
        ran.append(a.id)
        await asyncio.sleep(0)
        result: Attempt | None = release(True)
        return result

    async def run_attempt(a: Attempt, release: Any) -> Attempt | None:
        return await deliver(a, release)

    d._run_attempt = run_attempt  # type: ignore[method-assign]
    d._spawn = lambda a: spawned.append(a.id)  # type: ignore[method-assign]
    return d, ran, spawned


async def test_a_slot_runs_its_queued_successors_in_the_same_task() -> None:
    d, ran, spawned = slot_dispatcher(per_endpoint=1)
    cap = d.capacity
    fresh = asyncio.get_running_loop().time() + d.lease_seconds
    for _ in range(4):
        assert cap.admit("whk_a") is not None  # the slot, then three queue places
    for n in (1, 2, 3):
        assert cap.enqueue("whk_a", attempt(n, fresh)) == []
    await d._run_slot(attempt(0, fresh))
    assert ran == ["dlv_0", "dlv_1", "dlv_2", "dlv_3"] and spawned == []
    assert cap.total == 0 and cap.busy == {} and cap.queued("whk_a") == 0


async def test_a_slot_skips_a_stale_successor_and_frees_when_done() -> None:
    d, ran, spawned = slot_dispatcher(per_endpoint=1)
    cap = d.capacity
    now = asyncio.get_running_loop().time()
    fresh = now + d.lease_seconds
    for _ in range(3):
        assert cap.admit("whk_a") is not None
    assert cap.enqueue("whk_a", attempt(1, now + 0.5)) == []  # lease nearly spent
    assert cap.enqueue("whk_a", attempt(2, fresh)) == []
    await d._run_slot(attempt(0, fresh))
    # dlv_1 is left to the claim loop; dlv_2 gets the slot through the usual start path.
    assert ran == ["dlv_0"] and spawned == ["dlv_2"]
    assert d._soonest is not None and cap.busy == {"whk_a": 1}


async def test_the_last_post_to_end_hurries_the_recorded_successes() -> None:
    d, ran, _ = slot_dispatcher(per_endpoint=2)
    hurried: list[int] = []
    d.recorder.hurry = lambda: hurried.append(d.capacity.total)  # type: ignore[method-assign]
    fresh = asyncio.get_running_loop().time() + d.lease_seconds
    for _ in range(2):
        assert d.capacity.admit("whk_a") is not None  # two slots
    await asyncio.gather(d._run_slot(attempt(0, fresh)), d._run_slot(attempt(1, fresh)))
    assert ran == ["dlv_0", "dlv_1"]
    assert hurried == [0]  # only once nothing was in flight any more
