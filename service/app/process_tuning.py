"""Interpreter settings of a process, applied once its start-up is done: the long-running ones
(serve, the relay) and the bulk commands of the command line (import, replay).

Both allocate a dozen objects an event and free them by reference counting. The cycle
collector, run every 700 allocations by default, finds nothing to free but walks what is in
hand each time, and, each time the survivors pile up, every object the process holds: as much
as the decoding and the fold themselves cost, a third of an import's time. So everything built
at start-up (modules, settings, engine, clients), which lives as long as the process, is moved
out of its sight for good, and it runs far less often (it still runs, should anything leave a
cycle).

The database driver runs in threads (aiosqlite) that need the GIL back after each statement,
and the event loop needs it back after each of theirs; a thread waiting for the GIL gets it only
once the holder has run for the switch interval (5 ms by default), during which the database
idles and an answer waits. 1 ms costs a few more switches.
"""

from __future__ import annotations

import gc
import sys

__all__ = ["settle_for_bulk_work", "settle_for_serving"]


def settle_for_serving() -> None:
    """For a process that answers queries while ingest runs beside them: the collector runs
    every 50,000 allocations (a young collection of a few milliseconds at most, every batch or
    two of a backlog), not long enough to stall an answer."""
    _settle(young_threshold=50_000, older=(20, 100))


def settle_for_bulk_work() -> None:
    """For a command that answers nobody while it works: the collector runs every two million
    allocations, once a batch or two of an import."""
    _settle(young_threshold=2_000_000, older=(100, 1000))


def _settle(young_threshold: int, older: tuple[int, int]) -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(young_threshold, *older)
    sys.setswitchinterval(0.001)
