"""Jittered retry delays from the schedule's waits, Retry-After handling and event filters."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.webhooks.schedule import (
    EVENT_TYPES,
    matches,
    next_attempt_delay,
    respect_retry_after,
    unknown_events,
)

DEFAULT = "5,300,1800,7200,18000,36000,50400,72000,86400"


def test_delays_without_jitter() -> None:
    schedule = [5, 295, 1500]
    assert next_attempt_delay(schedule, 1, jitter=0) == 5
    assert next_attempt_delay(schedule, 2, jitter=0) == 295
    assert next_attempt_delay(schedule, 3, jitter=0) == 1500
    assert next_attempt_delay(schedule, 4, jitter=0) is None
    assert next_attempt_delay(schedule, 99, jitter=0) is None


def test_delays_sum_to_the_schedule() -> None:
    schedule = [int(x) for x in DEFAULT.split(",")]
    delays = [next_attempt_delay(schedule, n, jitter=0) for n in range(1, len(schedule) + 1)]
    assert sum(d for d in delays if d is not None) == sum(schedule)
    assert next_attempt_delay(schedule, len(schedule) + 1) is None


def test_attempt_must_be_positive() -> None:
    with pytest.raises(ValueError):
        next_attempt_delay([5], 0)


@pytest.mark.parametrize("jitter", [-0.1, 1.0, 2.0])
def test_jitter_must_be_a_fraction(jitter: float) -> None:
    with pytest.raises(ValueError):
        next_attempt_delay([5], 1, jitter=jitter)


@given(
    schedule=st.lists(st.integers(min_value=1, max_value=10**6), min_size=1, max_size=12),
    attempt=st.integers(min_value=1, max_value=13),
    jitter=st.floats(min_value=0, max_value=0.5),
    seed=st.integers(),
)
def test_jitter_stays_within_bounds(schedule: list[int], attempt: int, jitter: float, seed: int) -> None:
    delay = next_attempt_delay(schedule, attempt, jitter=jitter, rng=random.Random(seed))
    if attempt > len(schedule):
        assert delay is None
        return
    base = schedule[attempt - 1]
    assert delay is not None
    assert base * (1 - jitter) - 1e-9 <= delay <= base * (1 + jitter) + 1e-9


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    a = next_attempt_delay([100], 1, rng=random.Random(42))
    b = next_attempt_delay([100], 1, rng=random.Random(42))
    assert a == b
    assert a != 100


def test_jitter_spreads_delays() -> None:
    rng = random.Random(1)
    delays = {next_attempt_delay([1000], 1, rng=rng) for _ in range(50)}
    assert len(delays) > 40


def test_respect_retry_after() -> None:
    assert respect_retry_after(5.0, None, 3600) == 5.0
    assert respect_retry_after(5.0, 60.0, 3600) == 60.0
    assert respect_retry_after(120.0, 60.0, 3600) == 120.0  # never sooner than the schedule
    assert respect_retry_after(5.0, 10**9, 3600) == 3600  # an endpoint cannot push us out forever
    assert respect_retry_after(5.0, -3.0, 3600) == 5.0
    assert respect_retry_after(None, 60.0, 3600) is None  # exhausted stays exhausted


def test_event_catalogue() -> None:
    assert {
        "email.sent",
        "email.failed",
        "email.bounced",
        "reply.received",
        "forward.completed",
        "forward.failed",
        "lead.unsubscribed",
        "mailbox.unhealthy",
        "mailbox.recovered",
        "webhook.test",
        "webhook_endpoint.disabled",
    } == EVENT_TYPES


def test_matches() -> None:
    assert matches(["*"], "email.sent")
    assert matches(["email.sent", "reply.received"], "reply.received")
    assert not matches(["email.sent"], "email.failed")
    assert not matches([], "email.sent")
    assert not matches(["email.*"], "email.sent")  # only the full wildcard is supported


def test_unknown_events() -> None:
    assert unknown_events(["*", "email.sent"]) == []
    assert unknown_events(["email.sent", "email.opened", "email.*"]) == ["email.opened", "email.*"]
