"""What one delivery attempt's outcome means: delivered, retry later (when), or give up."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.webhooks.egress import PostResult
from gateway.webhooks.schedule import next_attempt_delay, respect_retry_after

GONE_REASON = "the endpoint answered 410 Gone"


@dataclass(frozen=True, slots=True)
class Decision:
    succeeded: bool
    error: str | None  # what went wrong, for the delivery log
    retry_in: float | None  # seconds until the next attempt; None = no automatic retry
    disable_reason: str | None  # the endpoint must be disabled now (410)


DELIVERED = Decision(True, None, None, None)


def retry_delay(
    schedule: Sequence[int], attempt: int, rng: random.Random | None = None
) -> float | None:
    """Seconds before attempt `attempt + 1`, with jitter; None once the schedule is spent.

    `MAILGW_WEBHOOK_RETRY_SCHEDULE` lists the waits between attempts (the default adds up to
    about three days).
    """
    return next_attempt_delay(schedule, attempt, rng=rng)


def describe_failure(result: PostResult) -> str:
    if result.error is not None:
        return result.error
    status = result.status
    if status is not None and 300 <= status < 400:
        return f"HTTP {status}: redirects are not followed"
    return f"HTTP {status}"


def decide(
    result: PostResult, attempt: int, schedule: Sequence[int], rng: random.Random | None = None
) -> Decision:
    """2xx is delivered; 410 disables the endpoint; anything else is retried on the schedule,
    later than the schedule says when a 429 or 503 carries `Retry-After`."""
    if result.ok:
        return DELIVERED
    error = describe_failure(result)
    if result.error is None and result.status == 410:
        return Decision(False, error, None, GONE_REASON)
    delay = retry_delay(schedule, attempt, rng)
    if result.status in (429, 503):
        delay = respect_retry_after(delay, result.retry_after, cap=float(max(schedule)))
    return Decision(False, error, delay, None)
