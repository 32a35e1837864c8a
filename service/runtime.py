"""Interpreter settings of the long-running processes, applied once they have started."""

from __future__ import annotations

import gc
import sys

__all__ = ["settle_for_serving"]


def settle_for_serving() -> None:
    """Tune the interpreter of a long-running process (serve, the relay) for answering quickly
    while ingest runs beside the answers. Called once start-up is done.

    Everything built at start-up (modules, settings, engine, clients) lives as long as the
    process: moved out of the cycle collector's sight, a full collection no longer walks it,
    which would stall the event loop for tens of milliseconds now and then.

    Ingest allocates a dozen objects a message and frees them by reference counting when the
    batch is acked; the collector, run every 700 allocations by default, found nothing to free
    but walked the batch in hand each time, as much as the decoding and the fold themselves
    cost. It runs every 50,000 allocations instead (a young collection of a few milliseconds,
    every batch or two of a backlog), and still runs, should anything leave a cycle.

    The database driver runs in threads (aiosqlite) that need the GIL back after each
    statement, and the event loop needs it back after each of theirs; a thread waiting for the
    GIL gets it only once the holder has run for the switch interval (5 ms by default), which
    shows directly in the latency of every answer. 1 ms costs a few more switches."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    sys.setswitchinterval(0.001)
