"""TaskPublisher: the deliver tasks of one loop turn go out in one `publish_many` call."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from gateway.bus.batch_publish import Outgoing
from gateway.bus.publisher import UnroutableError
from gateway.bus.topology import DELIVER_KEY, DELIVERY
from gateway.send import task_publisher
from gateway.send.handler import Task
from gateway.send.task_publisher import TaskPublisher

Outcomes = list[BaseException | None]


def task(n: int) -> Task:
    return Task(n, f"msg_{n}", b'{"messageId": "msg_%d"}' % n)


async def test_one_turn_is_one_call_and_each_caller_gets_its_own_outcomes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[list[Outgoing]] = []

    async def fake(publisher: Any, exchange: str, messages: Sequence[Outgoing]) -> Outcomes:
        assert exchange == DELIVERY
        calls.append(list(messages))
        return [UnroutableError("no") if m.message_id == "deliver:msg_3" else None for m in messages]

    monkeypatch.setattr(task_publisher, "publish_many", fake)
    publisher = TaskPublisher(object())  # type: ignore[arg-type]
    first, second, third = await asyncio.gather(
        publisher.publish([task(1), task(2)]), publisher.publish([task(3)]), publisher.publish([task(4)]))
    assert [[m.message_id for m in c] for c in calls] == [
        ["deliver:msg_1", "deliver:msg_2", "deliver:msg_3", "deliver:msg_4"]]
    assert calls[0][0] == Outgoing(DELIVER_KEY, task(1).body, "deliver:msg_1")
    assert first == [None, None] and third == [None]
    assert len(second) == 1 and isinstance(second[0], UnroutableError)
    assert await publisher.publish([]) == [] and len(calls) == 1


async def test_a_failed_call_is_every_task_s_error(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(publisher: Any, exchange: str, messages: Sequence[Outgoing]) -> Outcomes:
        raise ConnectionError("gone")

    monkeypatch.setattr(task_publisher, "publish_many", broken)
    outcomes = await TaskPublisher(object()).publish([task(1), task(2)])  # type: ignore[arg-type]
    assert [type(o) for o in outcomes] == [ConnectionError, ConnectionError]
