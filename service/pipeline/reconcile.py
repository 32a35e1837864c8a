"""Reconciliation (CONTRACT section 13; docs/ghosts.md): the ledger's live connections against
the platform's own list, session by session, and the events no producer sent that make them
agree.

A pass looks once at each session: the platform's list of its live connections, and the
ledger's connections. A connection is acted on only on the evidence of two consecutive looks,
one per pass, both of which succeeded:

- live in the ledger at both looks and absent from both lists: a `connectionDestroyed`
  (reason networkDisconnected, origin reconcile), its id from the connection's created
  position and its timestamp the second look's;
- listed by both and never seen by the ledger (no row in the projection, not even a tombstone):
  a `connectionCreated` (origin reconcile) with the platform's join time as both timestamp and
  creationTime, and its id from that.

The previous look of each session is kept in memory, for the sessions of the previous pass
only, and only what the next look can act on: the connections live in the ledger and absent
from the list, and those listed that the ledger has never seen. A connection the ledger has
seen stays seen (its projection row outlives its leave), so "listed at both looks and unseen at
the second" is "listed and unseen at both", and a look with nothing of either kind, the usual
one, is kept as no look at all: nothing could be acted on at the next. A session whose look
failed (an error of any kind: 401, 429, 5xx, an unknown session, an answer that is not a list)
has no look, so nothing is done to it until two more looks in a row succeed. After a restart,
or once another instance held the lease meanwhile, the looks start over: the evidence is always
two looks this process made one pass apart, never a stale one.

The active sessions are read a page at a time (reconcile_view.active_sessions), so a pass holds
one page of them, whatever their number, beside the looks that found something.

Requests go at most `rate` a second (LEDGER_RECONCILE_RATE, 10 by default), and a Retry-After
(429, 503) holds every request back until it has passed, in this pass and the next. The events
go through the pipeline like any other (hooks, veto recorded); one already in the ledger is not
offered again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from service.events import Event, EventType, Origin, synthetic_event_id
from service.ledger.lease import Lease
from service.ledger.reconcile_view import SeenConnection, active_sessions, seen_connections
from service.ledger.store import LedgerStore, now_ms
from service.metrics import Metrics
from service.pipeline.batches import Pipeline
from service.pipeline.synthetic import append_synthetic
from service.platforms.live_lists import Listed, PlatformError

__all__ = [
    "RECONCILE_LEASES",
    "REQUESTS_PER_SECOND",
    "Lister",
    "PassReport",
    "Reconciler",
]

log = logging.getLogger(__name__)

# One lease per platform: a Vonage pass and a LiveKit pass may run at once, two of one may not.
RECONCILE_LEASES: Final = {"vonage": 0x52435647, "livekit": 0x52434C4B}  # "RCVG", "RCLK"
REQUESTS_PER_SECOND: Final = 10.0
# Failed looks a pass reports by name; a platform that is down would otherwise fill a pass's
# report with one line per session.
MAX_FAILURES_KEPT: Final = 100
# The longest a Retry-After is waited out within one pass; past it, the pass ends there.
LONGEST_RETRY_AFTER: Final = 60.0


class Lister(Protocol):
    """A platform's list of a session's live connections."""

    platform: str
    # The sources (service.events.Source values) whose sessions this platform speaks for.
    sources: tuple[str, ...]

    async def live(self, session_id: str) -> dict[str, Listed]:
        """Connection id -> what the platform says of it; raises PlatformError for no list."""
        ...


@dataclass(frozen=True, slots=True)
class _Look:
    """What of one look the next can act on."""

    # Live in the ledger and absent from the list: a ghost if the next look says the same.
    unlisted: frozenset[str]
    # Listed, and never seen by the ledger: a missed join if the next look says the same.
    unseen: frozenset[str]


@dataclass(slots=True)
class PassReport:
    sessions: int = 0
    errors: int = 0
    destroyed: int = 0
    created: int = 0
    appended: int = 0
    # The first MAX_FAILURES_KEPT failed looks, "session: why" (`errors` counts them all).
    failures: list[str] = field(default_factory=list)


class _Pace:
    """At most `rate` requests a second, and none before a Retry-After has passed."""

    def __init__(self, rate: float) -> None:
        self.gap = 1.0 / rate
        self.next = 0.0

    async def wait(self) -> None:
        delay = self.next - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        self.next = max(self.next, time.monotonic()) + self.gap

    def hold(self, seconds: float) -> None:
        self.next = max(self.next, time.monotonic() + seconds)


def gone_event(session_id: str, connection_id: str, seen: SeenConnection, now: int) -> Event:
    return Event(
        synthetic_event_id(Origin.RECONCILE, "gone", session_id, connection_id, seen.created_position),
        EventType.DESTROYED,
        session_id,
        now,
        connection_id,
        seen.creation_time,
        seen.data,
        "networkDisconnected",
        origin=Origin.RECONCILE,
    )


def missed_event(session_id: str, connection_id: str, listed: Listed) -> Event:
    return Event(
        synthetic_event_id(Origin.RECONCILE, "missed", session_id, connection_id, listed.creation_time),
        EventType.CREATED,
        session_id,
        listed.creation_time,
        connection_id,
        listed.creation_time,
        listed.data,
        None,
        origin=Origin.RECONCILE,
    )


class Reconciler:
    def __init__(
        self,
        store: LedgerStore,
        pipeline: Pipeline,
        lister: Lister,
        metrics: Metrics | None = None,
        clock: Callable[[], int] = now_ms,
        rate: float = REQUESTS_PER_SECOND,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.lister = lister
        self.metrics = metrics
        self.clock = clock
        # Kept from pass to pass: a Retry-After holds back the next pass's requests too.
        self.pace = _Pace(rate)
        self.lease = Lease(store.engine, RECONCILE_LEASES[lister.platform])
        self.looks: dict[str, _Look] = {}
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    def forget(self) -> None:
        """Start the looks over (the lease was let go, or lost)."""
        self.looks = {}

    async def run(self, interval: float) -> None:
        """A pass every `interval` seconds until stopped, each only under the platform's lease."""
        try:
            while not self._stop.is_set():
                try:
                    if await self.lease.try_acquire() and await self.lease.still_held():
                        await self.reconcile()
                    else:
                        self.forget()
                except Exception as error:
                    self.forget()
                    log.warning("a %s reconciliation pass failed: %s", self.lister.platform, error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), interval)
        finally:
            await self.lease.release()

    async def reconcile(self, sessions: Sequence[str] | None = None) -> PassReport:
        """One pass: a look at each of `sessions` (default: the platform's active sessions, a
        page at a time), acting on what two consecutive looks agree on. The caller holds the
        lease."""
        platform = self.lister.platform
        if self.metrics is not None:
            self.metrics.reconcile_runs.labels(platform).inc()
        report = PassReport()
        looks: dict[str, _Look] = {}
        if sessions is None:
            async with contextlib.aclosing(active_sessions(self.store.engine, self.lister.sources)) as paged:
                async for session_id in paged:
                    if not await self._look(session_id, looks, report):
                        break
        else:
            for session_id in sessions:
                if not await self._look(session_id, looks, report):
                    break
        self.looks = looks
        return report

    async def _look(self, session_id: str, looks: dict[str, _Look], report: PassReport) -> bool:
        """Look at one session, keep what the next look can act on in `looks`, and append what
        this look and the previous agree on; False when the pass is to end here."""
        if self._stop.is_set():
            return False
        await self.pace.wait()
        report.sessions += 1
        try:
            listed = await self.lister.live(session_id)
        except PlatformError as error:
            report.errors += 1
            if len(report.failures) < MAX_FAILURES_KEPT:
                report.failures.append(f"{session_id}: {error}")
            if self.metrics is not None:
                self.metrics.reconcile_errors.labels(self.lister.platform).inc()
            if error.retry_after is not None:
                if error.retry_after > LONGEST_RETRY_AFTER:
                    return False  # the sessions not looked at this pass have no look
                self.pace.hold(error.retry_after)
            return True
        seen = await seen_connections(self.store.engine, session_id)
        look = _Look(
            frozenset(c for c, s in seen.items() if s.live and c not in listed),
            frozenset(c for c in listed if c not in seen),
        )
        if look.unlisted or look.unseen:
            looks[session_id] = look
        before = self.looks.get(session_id)
        if before is None:
            return True
        now = self.clock()
        events = [gone_event(session_id, c, seen[c], now) for c in sorted(look.unlisted & before.unlisted)]
        report.destroyed += len(events)
        missed = [missed_event(session_id, c, listed[c]) for c in sorted(look.unseen & before.unseen)]
        report.created += len(missed)
        events += missed
        if events:
            report.appended += await append_synthetic(
                self.store, self.pipeline, self.lease, events, now, Origin.RECONCILE, self.metrics
            )
        return True
