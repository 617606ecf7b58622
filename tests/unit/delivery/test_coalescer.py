"""Coalescer: concurrent requests share statements; none is left waiting."""

from __future__ import annotations

import asyncio

from gateway.delivery.batch import Coalescer


async def test_requests_arriving_during_a_statement_form_the_next_one() -> None:
    calls: list[list[int]] = []
    gate = asyncio.Event()

    async def run_batch(items: list[int]) -> list[int]:
        calls.append(items)
        await gate.wait()
        return [i * 10 for i in items]

    async def run_one(item: int) -> int:
        calls.append([item])
        await gate.wait()
        return item * 10

    c: Coalescer[int, int] = Coalescer(run_batch, run_one, max_inflight=1)
    first = asyncio.create_task(c(1))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(c(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(first, *rest) == [10, 20, 30, 40]
    assert calls == [[1], [2, 3, 4]]


async def test_a_request_arriving_as_the_last_drain_ends_is_still_run() -> None:
    # A drain task is discarded a loop turn after its loop ends; callers whose batch it just
    # finished run in that turn, and a request they make then must start a new drain rather
    # than wait for a later request (it used to wait forever when none came).
    c: Coalescer[int, int] = Coalescer(_double, _one, max_inflight=1)

    async def client(i: int) -> int:
        assert await c(i) == 2 * i  # batch [1, 2]: both callers resume together
        return await c(i + 100)

    assert await asyncio.wait_for(asyncio.gather(client(1), client(2)), timeout=10) == [202, 204]


async def test_a_failed_batch_is_retried_item_by_item() -> None:
    async def run_batch(items: list[int]) -> list[int]:
        raise RuntimeError("batch failed")

    async def run_one(item: int) -> int:
        if item == 2:
            raise ValueError("bad row")
        return item

    c: Coalescer[int, int] = Coalescer(run_batch, run_one, max_inflight=1)
    results = await asyncio.gather(c(1), c(2), c(3), return_exceptions=True)
    assert results[0] == 1 and results[2] == 3 and isinstance(results[1], ValueError)


async def _double(items: list[int]) -> list[int]:
    return [2 * i for i in items]


async def _one(item: int) -> int:
    return 2 * item
