"""Expiry: a connection live for longer than LEDGER_MAX_CONNECTION_AGE gets a
`connectionDestroyed` (reason networkDisconnected, origin expiry) that no producer sent
(CONTRACT section 13; docs/ghosts.md).

A connection's age is the wall clock now less its `creationTime` (ms) as the projection holds
it. The destroy is an ordinary event through the pipeline: the hooks decide it (one may prevent
it, and the veto is recorded), and its id is derived from the connection (session, connection,
creation time, created position), so a pass run again after a crash, or by a second instance,
makes a duplicate, never a second record. Its `timestamp` is the moment the connection reached
the age (creationTime + the age), not the moment a pass noticed: the same facts give the same
event, whichever instance appends it and however late.

One instance at a time runs passes, under a lease of its own (service/ledger/lease.py), so two
instances do not each run the hooks of the same destroys; were the lease lost unnoticed and two
passes overlap, the ids still keep it to one record each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final

from service.events import MAX_EPOCH_MS, Event, EventType, Origin, synthetic_event_id
from service.ledger.aged_connections import AgedConnection, aged_connections
from service.ledger.lease import Lease
from service.ledger.store import LedgerStore, now_ms
from service.metrics import Metrics
from service.pipeline.batches import Pipeline
from service.pipeline.synthetic import append_synthetic

__all__ = ["EXPIRY_LEASE", "Expirer", "expiry_event"]

log = logging.getLogger(__name__)

EXPIRY_LEASE: Final = 0x45585059  # "EXPY"; the relay's is "RELY"
# Connections looked at, and destroys appended, per batch of a pass.
PAGE: Final = 500
# A pass at least this often, and at most every quarter of the age: a connection is destroyed
# within a quarter of the age (or this) after it reaches the age.
LONGEST_WAIT: Final = 10.0
SHORTEST_WAIT: Final = 0.05


def expiry_event(connection: AgedConnection, max_age_ms: int) -> Event:
    """The destroy of a connection that reached `max_age_ms`, the same whenever it is built."""
    session_id, connection_id = connection.session_id, connection.connection_id
    key = (session_id, connection_id, connection.creation_time, connection.created_position)
    return Event(
        synthetic_event_id(Origin.EXPIRY, *key),
        EventType.DESTROYED,
        session_id,
        min(connection.creation_time + max_age_ms, MAX_EPOCH_MS),
        connection_id,
        connection.creation_time,
        connection.data,
        "networkDisconnected",
        origin=Origin.EXPIRY,
    )


class Expirer:
    def __init__(
        self,
        store: LedgerStore,
        pipeline: Pipeline,
        max_age: float,
        metrics: Metrics | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.max_age_ms = int(max_age * 1000)
        self.metrics = metrics
        self.clock = clock
        self.lease = Lease(store.engine, EXPIRY_LEASE)
        self.wait = min(max(max_age / 4, SHORTEST_WAIT), LONGEST_WAIT)
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Passes until stopped, each only while this instance holds the expiry lease."""
        try:
            while not self._stop.is_set():
                try:
                    if await self.lease.try_acquire() and await self.lease.still_held():
                        await self.expire()
                except Exception as error:
                    # The database away, most likely: the next pass tries again, and what this
                    # one appended stays appended (the ids make a second try harmless).
                    log.warning("an expiry pass failed: %s", error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.wait)
        finally:
            await self.lease.release()

    async def run_once(self) -> int | None:
        """One pass under the lease, then let it go; None when another instance holds it."""
        if not await self.lease.try_acquire():
            return None
        try:
            return await self.expire()
        finally:
            await self.lease.release()

    async def expire(self) -> int:
        """Append the destroys of every live connection past the age; returns how many were
        appended (vetoed ones included). The caller holds the lease."""
        now = self.clock()
        appended = 0
        after: tuple[int, str, str] | None = None
        while True:
            # Live for longer than the age: created before now - age, to the millisecond.
            created_by = now - self.max_age_ms - 1
            page = await aged_connections(self.store.engine, created_by, after, PAGE)
            if not page:
                break
            after = (page[-1].creation_time, page[-1].session_id, page[-1].connection_id)
            events = [expiry_event(c, self.max_age_ms) for c in page]
            appended += await append_synthetic(
                self.store, self.pipeline, self.lease, events, now, Origin.EXPIRY, self.metrics
            )
            if len(page) < PAGE:
                break
        return appended
