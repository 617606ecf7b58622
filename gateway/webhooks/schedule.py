"""Webhook retries (the schedule's waits between attempts, jittered; Retry-After) and the
event type catalogue."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

EVENT_TYPES: frozenset[str] = frozenset(
    {
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
    }
)
WILDCARD = "*"
_RNG = random.Random()


def next_attempt_delay(
    waits: Sequence[int],
    attempt: int,
    *,
    jitter: float = 0.1,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds from now until the next attempt, after `attempt` attempts; None when exhausted.

    `waits` is the retry schedule (`MAILGW_WEBHOOK_RETRY_SCHEDULE`): the wait between one
    attempt and the next, so attempt n is followed by waits[n - 1], scaled by a random factor
    in [1 - jitter, 1 + jitter] so that retries of many deliveries do not arrive together.
    """
    if attempt < 1:
        raise ValueError("attempt counts attempts already made and starts at 1")
    if not 0 <= jitter < 1:
        raise ValueError("jitter must be a fraction in [0, 1)")
    if attempt > len(waits):
        return None
    wait = waits[attempt - 1]
    if jitter == 0:
        return float(wait)
    factor = 1 + (rng or _RNG).uniform(-jitter, jitter)
    return wait * factor


def respect_retry_after(delay: float | None, retry_after: float | None, cap: float) -> float | None:
    """Wait at least what the endpoint asked (429/503 `Retry-After`), but no more than `cap`.

    None stays None: an exhausted schedule is not extended by the endpoint's request.
    """
    if delay is None or retry_after is None:
        return delay
    return max(delay, min(max(retry_after, 0.0), cap))


def matches(filter_events: Iterable[str], event_type: str) -> bool:
    """True when an endpoint subscribed to `filter_events` should receive `event_type`."""
    return any(f == WILDCARD or f == event_type for f in filter_events)


def unknown_events(filter_events: Iterable[str]) -> list[str]:
    """Names in an endpoint's `events` that are neither known types nor `*` (a 400)."""
    return [f for f in filter_events if f != WILDCARD and f not in EVENT_TYPES]
