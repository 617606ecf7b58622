"""Process-wide runtime settings of the long-running mailgw processes (api and roles)."""

from __future__ import annotations

import gc

# CPython collects its youngest generation after every 700 net allocations. Ingestion, the
# dispatcher and the API allocate many short-lived objects per message (parsed mail, rows,
# events, frames), nearly all freed by reference counting, so most of those collections find
# nothing: the poller spent ~6-8% of its CPU on them (bench/inbound.py, docs/performance.md).
# Reference cycles are still collected, later and in larger batches.
GC_THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    """Call once startup is done: startup's objects (modules, settings, pools) move to the
    permanent generation, which no collection scans again, and collections run less often."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
