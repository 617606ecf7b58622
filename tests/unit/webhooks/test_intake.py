"""The dispatcher's intake (consumers/dispatcher.py): batches wait briefly to be fuller, and
are acked, in order, only once recorded."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import orjson
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from consumers import dispatcher as role
from gateway.bus.acks import OrderedAcker, Outcome

HOUR = 3600.0  # a linger no test may wait out: only a full batch or shutdown ends it


class FakeDispatcher:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.recorded = asyncio.Event()

    async def intake(self, items: list[tuple[dict[str, Any], bytes]]) -> list[int]:
        self.batches.append([event["id"] for event, _ in items])
        self.recorded.set()
        return [1] * len(items)


class Harness:
    def __init__(self, linger: float) -> None:
        self.acks: list[tuple[int, bool]] = []
        self.dispatcher = FakeDispatcher()
        self.channel = object()

        async def ack(message: DeliveredMessage, multiple: bool) -> None:
            self.acks.append((role._tag(message), multiple))

        async def settle_failure(message: DeliveredMessage, outcome: Outcome, reason: str) -> str:
            raise AssertionError("no failures expected")

        acker = OrderedAcker(settle_failure, lambda label, n: None, max_held=role.PREFETCH, ack=ack)
        self.intake = role.Intake(cast(Any, self.dispatcher), acker, linger=linger)

    def message(self, tag: int) -> DeliveredMessage:
        body = orjson.dumps({"id": f"evt_{tag}", "type": "email.sent", "workspaceId": "ws_1"})
        return cast(DeliveredMessage, SimpleNamespace(
            body=body, channel=self.channel,
            delivery=Basic.Deliver(consumer_tag="c", delivery_tag=tag),
            header=SimpleNamespace(properties=SimpleNamespace(message_id=f"evt_{tag}")),
        ))

    async def deliver(self, tags: range) -> None:
        for tag in tags:
            await self.intake.on_message(self.message(tag))

    async def settled(self) -> None:
        async with asyncio.timeout(10):  # a guard against a hang, not a timing assertion
            while self.intake.workers:
                await asyncio.wait(set(self.intake.workers))


async def test_a_full_batch_ends_the_linger() -> None:
    h = Harness(linger=HOUR)
    await h.deliver(range(1, role.FULL_BATCH))
    await asyncio.sleep(0)  # the worker starts and lingers: one event short of a full batch
    assert h.dispatcher.batches == []
    await h.deliver(range(role.FULL_BATCH, role.FULL_BATCH + 1))
    await h.settled()
    assert h.dispatcher.batches == [[f"evt_{t}" for t in range(1, role.FULL_BATCH + 1)]]
    assert h.acks == [(role.FULL_BATCH, True)]  # one multiple ack, after the batch was recorded


async def test_a_short_batch_goes_after_the_linger() -> None:
    h = Harness(linger=0.001)
    await h.deliver(range(1, 4))
    await h.settled()
    assert h.dispatcher.batches == [["evt_1", "evt_2", "evt_3"]]
    assert h.acks == [(3, True)]


async def test_shutdown_does_not_wait_out_the_linger() -> None:
    h = Harness(linger=HOUR)
    await h.deliver(range(1, 3))
    await asyncio.sleep(0)
    async with asyncio.timeout(10):  # a guard against a hang, not a timing assertion
        await h.intake.finish(HOUR)
    assert h.dispatcher.batches == [["evt_1", "evt_2"]]
    assert h.acks == [(2, True)]


async def test_nothing_is_acked_before_it_is_recorded() -> None:
    h = Harness(linger=HOUR)
    await h.deliver(range(1, 3))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert h.acks == [] and h.dispatcher.batches == []
    await h.intake.finish(HOUR)
    assert h.acks == [(2, True)]
