"""Appending events the ledger makes itself (expiry, reconciliation), the one way both do it."""

from __future__ import annotations

from collections.abc import Sequence

from service.events import Event, Origin
from service.ledger.lease import Lease
from service.ledger.model import Appended
from service.ledger.store import LedgerStore
from service.metrics import Metrics
from service.pipeline.batches import Pipeline

__all__ = ["append_synthetic"]


async def append_synthetic(
    store: LedgerStore,
    pipeline: Pipeline,
    lease: Lease,
    events: Sequence[Event],
    now: int,
    origin: Origin,
    metrics: Metrics | None,
) -> int:
    """Append `events` through the pipeline (hooks and all) while `lease` is still this
    process's; returns how many were appended, vetoed ones included.

    One already in the ledger is left out before the hooks: a destroy a hook prevented leaves
    its connection live, and is not offered again on every pass. Under a lease lost unnoticed
    nothing is appended: another instance may be doing this work now."""
    known = await store.known([event.id for event in events])
    fresh = [event for event in events if event.id not in known]
    if not fresh or not await lease.still_held():
        return 0
    result = await pipeline.commit(await pipeline.prepare_synthetic(fresh, now))
    appended = sum(1 for outcome in result.outcomes if type(outcome) is Appended)
    if metrics is not None:
        metrics.ghosts_found.labels(origin.value).inc(len(fresh))
        if appended:
            metrics.synthetic_events.labels(origin.value).inc(appended)
    return appended
