"""Capacity bookkeeping (start now / queue with a longer lease / leave to the claim loop) and batching."""

from __future__ import annotations

import asyncio

import pytest

from gateway.webhooks.batching import Batcher
from gateway.webhooks.capacity import Admission, Capacity


def cap(global_limit: int = 4, per: int = 2, queue: int | None = None,
        total: int | None = None) -> Capacity[str]:
    return Capacity(global_limit=global_limit, per_endpoint=per, timeout=10, base_lease=17,
                    queue_per_endpoint=queue, queue_total=total)


def test_per_endpoint_slots_then_queue_with_growing_leases() -> None:
    c = cap(global_limit=10, per=2, queue=4, total=40)
    assert c.admit("a") == Admission(True, 17) and c.admit("a") == Admission(True, 17)
    queued = [c.admit("a") for _ in range(4)]
    # Position q waits at most (q // per + 1) POSTs of at most the timeout each.
    assert [q.lease for q in queued if q] == [27, 27, 37, 37] and not any(q.now for q in queued if q)
    assert c.admit("a") is None  # queue full: left to the claim loop
    assert c.admit("b") == Admission(True, 17)  # another endpoint is not held up
    plan, skip, room = c.claim_plan()
    assert plan == [("b", 1, 0)] and skip == ["a"]  # a: no free slot and a full queue
    assert room == (10 - 3) + (40 - 4)


def test_queued_leases_are_capped_and_the_default_queue_is_deep() -> None:
    c = cap(global_limit=64, per=2)
    assert c.queue_limit >= 2048 and c.queue_total_limit >= 8192
    for _ in range(2):
        c.admit("a")
    leases = [adm.lease for _ in range(20) if (adm := c.admit("a")) is not None]
    assert len(leases) == 20 and leases[:2] == [27, 27] and max(leases) == 17 + 4 * 10
    # The intake queued 20, but claims fill a queue only as deep as a capped lease covers.
    assert c.claim_queue_limit == 4 * 2
    plan, skip, room = c.claim_plan()
    assert plan == [] and skip == ["a"] and room == (64 - 2) + 4 * 64


def test_release_hands_the_slot_to_the_queue_in_order() -> None:
    c = cap(global_limit=10, per=1)
    assert c.admit("a") is not None
    assert c.admit("a") is not None and c.admit("a") is not None
    assert c.enqueue("a", "x1") == [] and c.enqueue("a", "x2") == []
    assert c.release("a") == "x1" and c.total == 1
    assert c.release("a") == "x2"
    assert c.release("a") is None and c.total == 0 and c.busy == {}
    assert c.claim_plan()[:2] == ([], [])


def test_enqueue_starts_when_a_slot_freed_meanwhile() -> None:
    c = cap(global_limit=10, per=1)
    c.admit("a")
    adm = c.admit("a")
    assert adm is not None and not adm.now
    assert c.release("a") is None  # nothing queued yet: the slot is freed
    assert c.enqueue("a", "x") == ["x"] and c.busy == {"a": 1}


def test_global_limit_and_abandon() -> None:
    c = cap(global_limit=2, per=2)
    first, second = c.admit("a"), c.admit("b")
    assert first is not None and second is not None
    assert c.admit("c") is None  # global limit reached: not queued either (c is not busy)
    assert c.free() == 0
    assert c.abandon("a", first) is None and c.free() == 1
    queued = cap(global_limit=4, per=1)
    queued.admit("a")
    assert queued.admit("a") == Admission(False, 27)
    adm = queued.admit("a")
    assert adm == Admission(False, 37)
    queued.abandon("a", adm)
    assert queued.admit("a") == Admission(False, 37)  # the abandoned place is free again


def test_claimed_rows_queue_and_pump_where_there_is_room() -> None:
    c = cap(global_limit=3, per=1)
    c.admit("a")
    c.force_enqueue("a", "a2")
    c.force_enqueue("b", "b1")  # claimed for a slot, but placed in the queue
    plan, _, _ = c.claim_plan()
    assert sorted(plan) == [("a", 0, 1), ("b", 0, 1)]  # an endpoint with a queue has no free slot
    assert c.pump() == ["b1"] and c.busy == {"a": 1, "b": 1}
    assert c.release("a") == "a2"
    assert c.release("a") is None and c.pump() == []


def test_closing_admits_nothing() -> None:
    c = cap()
    c.closing = True
    assert c.admit("a") is None


async def test_batcher_groups_concurrent_callers() -> None:
    sizes: list[int] = []

    async def flush(items: list[int]) -> list[int]:
        sizes.append(len(items))
        await asyncio.sleep(0)
        return [i * 2 for i in items]

    b: Batcher[int, int] = Batcher(flush)
    results = await asyncio.gather(*(b.submit(i) for i in range(10)))
    assert results == [i * 2 for i in range(10)]
    assert sum(sizes) == 10 and len(sizes) < 10


async def test_batcher_fails_every_caller_of_a_failed_batch() -> None:
    async def flush(items: list[int]) -> list[int]:
        raise RuntimeError("db down")

    b: Batcher[int, int] = Batcher(flush)
    outcome = await asyncio.gather(*(b.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcome)
    with pytest.raises(RuntimeError):
        await b.submit(1)


async def test_batcher_serves_an_item_submitted_as_its_worker_ends() -> None:
    """The first caller resumes before the finished worker's done callbacks run; its next
    item must still be flushed (not wait for some later submit)."""
    async def flush(items: list[int]) -> list[int]:
        await asyncio.sleep(0)
        return items

    b: Batcher[int, int] = Batcher(flush)
    async with asyncio.timeout(10):  # a guard against a hang, not a timing assertion
        assert await b.submit(1) == 1
        assert await b.submit(2) == 2


async def test_batcher_flushes_items_handed_over_without_waiting() -> None:
    flushed: list[int] = []

    async def flush(items: list[int]) -> list[int]:
        await asyncio.sleep(0)
        flushed.extend(items)
        return items

    b: Batcher[int, int] = Batcher(flush, max_batch=2)
    for i in range(5):
        b.submit_nowait(i)
    async with asyncio.timeout(10):  # a guard against a hang, not a timing assertion
        await b.idle()
    assert flushed == [0, 1, 2, 3, 4]
