"""OrderedAcker: contiguous successes share one multiple ack; nothing unsettled is ever covered."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from aio_pika.abc import AbstractIncomingMessage

from gateway.bus.acks import OrderedAcker, Outcome, ack_incoming


class Channel:
    """Plays the broker's side of one channel: checks every settlement against AMQP's rules."""

    def __init__(self) -> None:
        self.unsettled: set[int] = set()
        self.acked: set[int] = set()
        self.requeued: set[int] = set()
        self.frames: list[tuple[str, int, bool]] = []

    def deliver(self, tag: int) -> Message:
        self.unsettled.add(tag)
        return Message(self, tag)

    def settle(self, kind: str, tag: int, multiple: bool) -> None:
        self.frames.append((kind, tag, multiple))
        covered = {t for t in self.unsettled if t <= tag} if multiple else {tag}
        assert tag in self.unsettled, f"{kind} of an unknown tag {tag}"
        self.unsettled -= covered
        (self.acked if kind == "ack" else self.requeued).update(covered)


class Message:
    def __init__(self, channel: Channel, tag: int) -> None:
        self.channel, self.delivery_tag, self.message_id = channel, tag, f"m{tag}"

    async def ack(self, multiple: bool = False) -> None:
        self.channel.settle("ack", self.delivery_tag, multiple)

    async def nack(self, requeue: bool = True) -> None:
        self.channel.settle("nack", self.delivery_tag, False)


def make(max_held: int = 8) -> tuple[OrderedAcker[AbstractIncomingMessage], dict[str, int]]:
    counts: dict[str, int] = {}

    async def settle_failure(message: AbstractIncomingMessage, outcome: Outcome, reason: str) -> str:
        await message.nack(requeue=True)
        return "requeued"

    def count(label: str, n: int) -> None:
        counts[label] = counts.get(label, 0) + n

    return OrderedAcker(settle_failure, count, max_held=max_held, ack=ack_incoming), counts


def track(acker: OrderedAcker[AbstractIncomingMessage], message: Message) -> Any:
    return acker.track(cast(AbstractIncomingMessage, message))


async def test_successes_finishing_in_one_turn_share_one_ack() -> None:
    acker, counts = make()
    ch = Channel()
    deliveries = [track(acker, ch.deliver(tag)) for tag in range(1, 6)]
    for d in reversed(deliveries):  # any order within the turn
        acker.done(d, "ok")
    await acker.close()
    assert ch.frames == [("ack", 5, True)]
    assert ch.acked == {1, 2, 3, 4, 5} and counts == {"ok": 5}


async def test_a_failure_is_settled_alone_before_later_acks_cover_its_tag() -> None:
    acker, counts = make()
    ch = Channel()
    d = [track(acker, ch.deliver(tag)) for tag in range(1, 6)]
    acker.done(d[0], "ok")
    acker.done(d[1], "ok")
    acker.done(d[2], "requeue")
    acker.done(d[3], "ok")
    acker.done(d[4], "ok")
    await acker.close()
    assert ch.frames == [("ack", 2, True), ("nack", 3, False), ("ack", 5, True)]
    assert ch.requeued == {3} and ch.acked == {1, 2, 4, 5}
    assert counts == {"ok": 4, "requeued": 1}


async def test_finished_messages_wait_for_an_unfinished_head_then_share_its_ack() -> None:
    acker, _ = make(max_held=8)
    ch = Channel()
    d = [track(acker, ch.deliver(tag)) for tag in range(1, 5)]
    for x in d[1:]:
        acker.done(x, "ok")
    await asyncio.sleep(0)  # the settling task runs
    await asyncio.sleep(0)
    assert ch.frames == [] and ch.unsettled == {1, 2, 3, 4}  # 1 is still being handled
    acker.done(d[0], "ok")
    await acker.close()
    assert ch.frames == [("ack", 4, True)]


async def test_a_slow_head_does_not_hold_more_than_max_held_finished_messages() -> None:
    acker, counts = make(max_held=3)
    ch = Channel()
    d = [track(acker, ch.deliver(tag)) for tag in range(1, 6)]
    for x in d[1:4]:
        acker.done(x, "ok")
    await acker.settle()
    assert ch.frames == [("ack", 2, False), ("ack", 3, False), ("ack", 4, False)]
    assert ch.unsettled == {1, 5}  # never covered while unfinished
    acker.done(d[4], "ok")
    acker.done(d[0], "ok")
    await acker.close()
    assert ch.frames[3:] == [("ack", 5, True)] and ch.unsettled == set()
    assert counts == {"ok": 5}


async def test_close_settles_finished_messages_behind_an_unfinished_one() -> None:
    acker, _ = make()
    ch = Channel()
    d = [track(acker, ch.deliver(tag)) for tag in range(1, 4)]
    acker.done(d[1], "ok")
    acker.finish(d[2], "requeue")  # a cancelled handler
    await acker.close()
    assert ch.frames == [("ack", 2, False), ("nack", 3, False)]
    assert ch.unsettled == {1}  # left to the broker (requeued when the channel closes)


async def test_a_reopened_channel_starts_a_new_run() -> None:
    acker, _ = make()
    old, new = Channel(), Channel()
    d = [track(acker, old.deliver(1)), track(acker, old.deliver(2)), track(acker, new.deliver(1))]
    for x in d:
        acker.done(x, "ok")
    await acker.close()
    assert old.frames == [("ack", 2, True)] and new.frames == [("ack", 1, False)]
