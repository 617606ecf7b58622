"""IMAP response helpers: UID sets and FETCH literal parsing."""

from __future__ import annotations

from gateway.inbound.session import parse_fetch, uid_set
from gateway.inbound.watcher import Backoff


def test_uid_set_compresses_runs() -> None:
    assert uid_set([1, 2, 3, 7, 9, 10]) == "1:3,7,9:10"
    assert uid_set([5]) == "5"


def test_parse_fetch_uid_before_and_after_literal() -> None:
    lines = [
        b"1 FETCH (UID 11 BODY[] {5}", bytearray(b"hello"), b")",
        b"2 FETCH (BODY[] {3}", bytearray(b"abc"), b" UID 12)",
        b"Fetch completed.",
    ]
    got = parse_fetch(lines)
    assert [(f.uid, f.raw) for f in got] == [(11, b"hello"), (12, b"abc")]


def test_backoff_is_bounded() -> None:
    b = Backoff(base=1.0, ceiling=8.0)
    delays = [b.next_delay() for _ in range(50)]
    assert max(delays) <= 8.0 and delays[0] <= 1.0
    b.reset()
    assert b.next_delay() <= 1.0
