"""Deliver tasks of the sends a router finishes in one loop turn, published as one write.

A router batch commits many sends at once (`SendBatcher`), and each send then publishes its
deliver tasks. One `Publisher.publish` per task takes the channel lock, writes its frames with
their own `send()` and waits for that write before the next may start. `TaskPublisher.publish`
instead queues the tasks; at the end of the loop turn, everything queued goes out with
`gateway.bus.batch_publish.publish_many` (same messages, one write, confirms awaited together)
and each caller gets the outcome of its own tasks — the same error `Publisher.publish` would
have raised, so a task the broker did not take stays unstamped for the scheduler's relay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.bus.batch_publish import Outgoing, publish_many
from gateway.bus.publisher import Publisher
from gateway.bus.topology import DELIVER_KEY, DELIVERY
from gateway.send.handler import Task


def deliver_message_id(task: Task) -> str:
    """Delivery recognises a relayed duplicate of the task by this Message-ID."""
    return f"deliver:{task.message_id}"


class TaskPublisher:
    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self._queued: list[tuple[Sequence[Task], asyncio.Future[list[BaseException | None]]]] = []
        self._flushes: set[asyncio.Task[None]] = set()

    async def publish(self, tasks: Sequence[Task]) -> list[BaseException | None]:
        """Per task None when the broker confirmed it, else the publish error."""
        if not tasks:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[BaseException | None]] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush)
        self._queued.append((tasks, future))
        return await future

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        flush = asyncio.create_task(self._publish(queued))
        self._flushes.add(flush)  # held until done (the loop keeps only weak references)
        flush.add_done_callback(self._flushes.discard)

    async def _publish(
        self, queued: list[tuple[Sequence[Task], asyncio.Future[list[BaseException | None]]]]
    ) -> None:
        messages = [Outgoing(DELIVER_KEY, t.body, deliver_message_id(t))
                    for tasks, _ in queued for t in tasks]
        try:
            outcomes = await publish_many(self.publisher, DELIVERY, messages)
        except Exception as exc:
            outcomes = [exc] * len(messages)
        start = 0
        for tasks, future in queued:
            if not future.done():  # its caller was cancelled: nothing to tell
                future.set_result(outcomes[start:start + len(tasks)])
            start += len(tasks)
