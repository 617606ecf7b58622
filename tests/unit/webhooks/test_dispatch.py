"""Outcome decisions (pure) and event parsing of the dispatcher."""

from __future__ import annotations

import random

import pytest

from gateway.errors import PermanentError
from gateway.webhooks.attempts import GONE_REASON, decide, retry_delay
from gateway.webhooks.dispatch import parse_event
from gateway.webhooks.egress import PostResult

SCHEDULE = [5, 300, 1800]


def res(status: int | None, error: str | None = None, retry_after: float | None = None) -> PostResult:
    return PostResult(status, "", 10, error, retry_after)


def test_2xx_is_delivered() -> None:
    for status in (200, 201, 204, 299):
        d = decide(res(status), 1, SCHEDULE)
        assert d.succeeded and d.retry_in is None and d.error is None


def test_retry_delays_are_the_gaps_of_the_schedule_with_jitter() -> None:
    rng = random.Random(7)
    for attempt, gap in ((1, 5), (2, 300), (3, 1800)):
        for _ in range(50):
            delay = retry_delay(SCHEDULE, attempt, rng)
            assert delay is not None and gap * 0.9 <= delay <= gap * 1.1
    assert retry_delay(SCHEDULE, 4) is None  # schedule spent: 1 + 3 attempts in all


def test_default_schedule_spans_about_three_days() -> None:
    from gateway.config import DEFAULT_WEBHOOK_RETRY

    schedule = [int(x) for x in DEFAULT_WEBHOOK_RETRY.split(",")]
    total = sum(retry_delay(schedule, n, random.Random(0)) or 0 for n in range(1, len(schedule) + 1))
    assert 2.8 * 86400 < total < 3.5 * 86400


@pytest.mark.parametrize("status", [301, 302, 307, 308, 400, 404, 500, 502])
def test_everything_else_is_retried(status: int) -> None:
    d = decide(res(status), 1, SCHEDULE, random.Random(1))
    assert not d.succeeded and d.disable_reason is None
    assert d.retry_in is not None and 4.5 <= d.retry_in <= 5.5
    assert d.error is not None and str(status) in d.error
    if 300 <= status < 400:
        assert "redirect" in d.error


def test_transport_errors_keep_their_message() -> None:
    d = decide(res(None, "timeout after 15s"), 2, SCHEDULE)
    assert d.error == "timeout after 15s" and d.retry_in is not None


def test_410_disables_without_retry() -> None:
    d = decide(res(410), 1, SCHEDULE)
    assert not d.succeeded and d.retry_in is None and d.disable_reason == GONE_REASON


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_waits_longer_but_is_capped(status: int) -> None:
    d = decide(res(status, retry_after=120), 1, SCHEDULE, random.Random(2))
    assert d.retry_in == 120
    d = decide(res(status, retry_after=10**9), 1, SCHEDULE)
    assert d.retry_in == max(SCHEDULE)
    d = decide(res(status, retry_after=1), 1, SCHEDULE, random.Random(3))
    assert d.retry_in is not None and d.retry_in >= 4.5
    assert decide(res(status, retry_after=60), 4, SCHEDULE).retry_in is None  # spent stays spent


def test_retry_after_is_ignored_for_other_statuses() -> None:
    d = decide(res(500, retry_after=600), 1, SCHEDULE, random.Random(4))
    assert d.retry_in is not None and d.retry_in < 6


def test_parse_event() -> None:
    event = parse_event(b'{"id": "evt_1", "type": "email.sent", "workspaceId": "ws_1", "data": {}}')
    assert event["id"] == "evt_1"
    for bad in (b"not json", b"[]", b'{"id": "evt_1", "type": "email.sent"}',
                b'{"id": 1, "type": "x", "workspaceId": "w"}'):
        with pytest.raises(PermanentError):
            parse_event(bad)
