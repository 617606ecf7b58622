"""Batcher lingering: fewer, larger statements without holding anything up for long."""

from __future__ import annotations

import asyncio

import pytest

from gateway.webhooks.batching import Batcher

HOUR = 3600.0  # a linger no test may wait out: only the batch size or shutdown ends it


class Sink:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.flushed = asyncio.Event()

    async def flush(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        self.flushed.set()
        return items


async def test_enough_items_end_the_linger() -> None:
    sink = Sink()
    b: Batcher[int, int] = Batcher(sink.flush, min_batch=4, linger=HOUR)
    for i in range(3):
        b.submit_nowait(i)
    await asyncio.sleep(0)  # the worker starts and lingers: 3 < 4 items
    assert sink.batches == []
    b.submit_nowait(3)
    async with asyncio.timeout(10):  # a guard against a hang, not a timing assertion
        await sink.flushed.wait()
    assert sink.batches == [[0, 1, 2, 3]]


async def test_the_linger_ends_on_its_own() -> None:
    sink = Sink()
    b: Batcher[int, int] = Batcher(sink.flush, min_batch=100, linger=0.001)
    b.submit_nowait(1)
    b.submit_nowait(2)
    async with asyncio.timeout(10):  # a guard against a hang, not a timing assertion
        await sink.flushed.wait()
    assert sink.batches == [[1, 2]]


async def test_idle_does_not_wait_out_the_linger() -> None:
    sink = Sink()
    b: Batcher[int, int] = Batcher(sink.flush, min_batch=100, linger=HOUR)
    for i in range(3):
        b.submit_nowait(i)
    await asyncio.sleep(0)
    async with asyncio.timeout(10):  # a guard against a hang, not a timing assertion
        await b.idle()
    assert sink.batches == [[0, 1, 2]]


async def test_awaiting_callers_get_their_results_after_lingering() -> None:
    sink = Sink()
    b: Batcher[int, int] = Batcher(sink.flush, min_batch=3, linger=HOUR)
    async with asyncio.timeout(10):  # a guard against a hang, not a timing assertion
        assert await asyncio.gather(*(b.submit(i) for i in range(3))) == [0, 1, 2]
    assert sink.batches == [[0, 1, 2]]


async def test_a_worker_cancelled_while_lingering_cancels_the_waiting_callers() -> None:
    sink = Sink()
    b: Batcher[int, int] = Batcher(sink.flush, min_batch=10, linger=HOUR)
    caller = asyncio.ensure_future(b.submit(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    (worker,) = b._workers
    worker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert sink.batches == []


async def test_hurry_ends_the_linger() -> None:
    sink = Sink()
    b: Batcher[int, int] = Batcher(sink.flush, min_batch=100, linger=HOUR)
    b.submit_nowait(1)
    await asyncio.sleep(0)
    assert sink.batches == []
    b.hurry()
    async with asyncio.timeout(10):  # a guard against a hang, not a timing assertion
        await sink.flushed.wait()
    assert sink.batches == [[1]]
