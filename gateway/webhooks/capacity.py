"""Bounded concurrency for the dispatcher: overall, per endpoint, and a queue per endpoint.

An attempt either starts now (a free slot), waits in its endpoint's queue (the endpoint
is busy, the queue has room), or is left in the database for the claim loop. A queued
attempt is born claimed: its lease covers a wait of (q // per_endpoint + 1) timeouts for
queue position q (every POST ends within the timeout), capped at `MAX_QUEUED_ROUNDS`
rounds, so a crashed dispatcher's queued rows come due again within a few timeouts. The
queue is deep (an intake batch's worth: attempts it holds cost no claim statement), so a
slow endpoint can outlast a lease: the dispatcher then drops the queued attempt when its
turn comes (it never starts an attempt whose lease is nearly spent) and the claim loop
takes the row again once it is due. A finished POST hands its slot to the next queued
attempt of the same endpoint, so queued attempts never compete with the claim loop
(which treats endpoints with a queue as full).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

# Queue bounds (memory: a queued attempt holds its body). Per endpoint at least an intake
# batch plus the broker prefetch, so a burst of events for one endpoint needs no claims.
QUEUE_PER_ENDPOINT = 2048
QUEUE_TOTAL = 8192
# A queued row's lease counts at most this many rounds of POSTs ahead of it.
MAX_QUEUED_ROUNDS = 4


@dataclass(frozen=True, slots=True)
class Admission:
    now: bool  # a slot is taken: start at once; otherwise queued (reservation held)
    lease: float  # seconds the attempt's row stays claimed


class Capacity(Generic[T]):
    def __init__(
        self, *, global_limit: int, per_endpoint: int, timeout: float, base_lease: float,
        queue_per_endpoint: int | None = None, queue_total: int | None = None,
    ) -> None:
        self.global_limit = global_limit
        self.per_endpoint = per_endpoint
        self.timeout = timeout
        self.base_lease = base_lease
        self.queue_limit = (max(4 * per_endpoint, QUEUE_PER_ENDPOINT) if queue_per_endpoint is None
                            else queue_per_endpoint)
        self.queue_total_limit = max(4 * global_limit, QUEUE_TOTAL) if queue_total is None else queue_total
        self.busy: dict[str, int] = {}  # POSTs in flight per endpoint
        self.total = 0
        self.closing = False
        self._queues: dict[str, deque[T]] = {}
        self._reserved: dict[str, int] = {}  # queue places taken (queued or about to be)
        self._reserved_total = 0

    def has_room(self, endpoint_id: str) -> bool:
        return self.total < self.global_limit and self.busy.get(endpoint_id, 0) < self.per_endpoint

    def take(self, endpoint_id: str) -> None:
        self.busy[endpoint_id] = self.busy.get(endpoint_id, 0) + 1
        self.total += 1

    def free(self) -> int:
        return self.global_limit - self.total

    def admit(self, endpoint_id: str) -> Admission | None:
        """Start now, queue, or None: leave it to the claim loop (due now in the database)."""
        if self.closing:
            return None
        if self.has_room(endpoint_id):
            self.take(endpoint_id)
            return Admission(True, self.base_lease)
        place = self._reserved.get(endpoint_id, 0)
        if (
            self.busy.get(endpoint_id, 0) >= self.per_endpoint
            and place < self.queue_limit
            and self._reserved_total < self.queue_total_limit
        ):
            self._reserved[endpoint_id] = place + 1
            self._reserved_total += 1
            return Admission(False, self.queued_lease(place))
        return None

    def queued_lease(self, place: int) -> float:
        """The lease of an attempt queued at `place` (0-based): the POSTs ahead of it, capped."""
        rounds = min(place // self.per_endpoint + 1, MAX_QUEUED_ROUNDS)
        return self.base_lease + rounds * self.timeout

    def abandon(self, endpoint_id: str, admission: Admission) -> T | None:
        """Undo an admission whose row was not written; may hand the slot on (start it)."""
        if admission.now:
            return self.release(endpoint_id)
        self._unreserve(endpoint_id)
        return None

    def enqueue(self, endpoint_id: str, item: T) -> list[T]:
        """Queue an admitted item; returns what may start now (slots freed meanwhile)."""
        self._queues.setdefault(endpoint_id, deque()).append(item)
        started: list[T] = []
        while self.has_room(endpoint_id) and (nxt := self._pop(endpoint_id)) is not None:
            self.take(endpoint_id)
            started.append(nxt)
        return started

    def release(self, endpoint_id: str) -> T | None:
        """A POST is over: hand the slot to the endpoint's next queued item, or free it."""
        if not self.closing:
            nxt = self._pop(endpoint_id)
            if nxt is not None:
                return nxt
        left = self.busy.get(endpoint_id, 0) - 1
        if left > 0:
            self.busy[endpoint_id] = left
        else:
            self.busy.pop(endpoint_id, None)
        self.total -= 1
        return None

    def queued(self, endpoint_id: str) -> int:
        return self._reserved.get(endpoint_id, 0)

    @property
    def claim_queue_limit(self) -> int:
        """How deep the claim loop fills an endpoint's queue: only as far as a capped lease
        covers (the intake queues deeper, for bursts; claiming rows a slow endpoint cannot
        reach within their lease would only re-lease them over and over)."""
        return min(self.queue_limit, MAX_QUEUED_ROUNDS * self.per_endpoint)

    def claim_plan(self) -> tuple[list[tuple[str, int, int]], list[str], int]:
        """What the claim loop may take: (endpoint, free slots, queue length) for the endpoints
        this process knows, the endpoints it must skip (full, queue full as far as claims
        go), and how many rows in all (free slots plus queue room, at most 4 × the global
        limit of queued rows per claim). Unknown endpoints: every slot free, no queue."""
        plan: list[tuple[str, int, int]] = []
        skip: list[str] = []
        for endpoint_id in {*self.busy, *self._reserved}:
            queued = self._reserved.get(endpoint_id, 0)
            free = 0 if queued else max(0, self.per_endpoint - self.busy.get(endpoint_id, 0))
            if free == 0 and queued >= self.claim_queue_limit:
                skip.append(endpoint_id)
            else:
                plan.append((endpoint_id, free, queued))
        queue_room = min(4 * self.global_limit, self.queue_total_limit - self._reserved_total)
        room = max(0, self.free()) + max(0, queue_room)
        return plan, skip, room

    def force_enqueue(self, endpoint_id: str, item: T) -> None:
        """Queue an item the claim loop already claimed (its lease counts its place)."""
        self._reserved[endpoint_id] = self._reserved.get(endpoint_id, 0) + 1
        self._reserved_total += 1
        self._queues.setdefault(endpoint_id, deque()).append(item)

    def pump(self) -> list[T]:
        """Start queued items wherever there is room (after a slot freed or a claim)."""
        started: list[T] = []
        for endpoint_id in list(self._queues):
            while self.has_room(endpoint_id) and (nxt := self._pop(endpoint_id)) is not None:
                self.take(endpoint_id)
                started.append(nxt)
        return started

    def _pop(self, endpoint_id: str) -> T | None:
        queue = self._queues.get(endpoint_id)
        if not queue:
            return None
        item = queue.popleft()
        if not queue:
            del self._queues[endpoint_id]
        self._unreserve(endpoint_id)
        return item

    def _unreserve(self, endpoint_id: str) -> None:
        left = self._reserved.get(endpoint_id, 0) - 1
        if left > 0:
            self._reserved[endpoint_id] = left
        else:
            self._reserved.pop(endpoint_id, None)
        self._reserved_total -= 1
