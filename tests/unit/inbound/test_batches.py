"""How a catch-up's UIDs are cut into batches (watcher.batches)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.inbound.watcher import BATCH, batches


def test_one_batch_worth_is_one_batch() -> None:
    assert batches([], 100) == []
    assert batches([7], 100) == [[7]]
    assert batches(list(range(1, 101)), 100) == [list(range(1, 101))]


def test_a_long_catch_up_starts_small_then_doubles() -> None:
    sizes = [len(b) for b in batches(list(range(500)), 100)]
    assert sizes == [25, 50, 100, 100, 100, 100, 25]


def test_tiny_batch_size() -> None:
    assert batches([1, 2, 3], 1) == [[1], [2], [3]]
    assert [len(b) for b in batches(list(range(10)), 3)] == [1, 2, 3, 3, 1]


@given(st.lists(st.integers(min_value=1), unique=True).map(sorted), st.integers(min_value=1, max_value=300))
def test_batches_keep_every_uid_in_order_and_within_the_size(uids: list[int], batch: int) -> None:
    got = batches(uids, batch)
    assert [u for b in got for u in b] == uids
    assert all(0 < len(b) <= batch for b in got)


def test_default_size_is_the_watchers_batch() -> None:
    assert len(batches(list(range(BATCH)))) == 1
