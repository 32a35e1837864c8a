"""The dashboard's two reads: the overview of a recent time window (live connections, records
appended, vetoes, synthetic records and rejections per bucket, and the sessions with the
highest count), and one session's count over its records, down-sampled.

Each is read in one snapshot, so that its numbers agree with each other and with the
`position` it carries. The overview is kept for `ttl` seconds, and requests that arrive while
it is being read wait for that read: however many dashboards poll it, it costs one read per
`ttl`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.ledger import dashboard_view as view
from service.ledger.store import now_ms, transient_errors

__all__ = [
    "HISTORY_MARKS",
    "HISTORY_RECORDS",
    "OVERVIEW_TTL",
    "DashboardQueries",
    "overview_window",
]

# How long an overview is answered again before it is read anew (seconds).
OVERVIEW_TTL = 2.0
# The most records of a session the history covers (its latest), and marks it lists.
HISTORY_RECORDS = 100_000
HISTORY_MARKS = 500


class _Kept:
    """An overview read, under way or done, and when it began (time.monotonic())."""

    __slots__ = ("read", "started", "took")

    def __init__(self, started: float, read: Coroutine[Any, Any, dict[str, Any]]) -> None:
        self.started = started
        self.read: asyncio.Future[dict[str, Any]] = asyncio.ensure_future(read)
        self.took = 0.0

    def fresh(self, now: float, ttl: float) -> bool:
        """Under way, or read less than `ttl` ago; or, for a window that takes longer than that
        to read, less than twice its reading ago: reads then take at most half the time."""
        return not self.read.done() or now - self.started < max(ttl, 2 * self.took)


def overview_window(now: int, minutes: int, buckets: int) -> view.Window:
    """`buckets` buckets as wide as `minutes` shared among them (to the millisecond, rounded
    up), aligned to multiples of that width; the last one holds `now`."""
    width = -(-minutes * 60_000 // buckets)
    until = (now // width + 1) * width
    return view.Window(until - width * buckets, width, buckets)


class DashboardQueries:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        ttl: float = OVERVIEW_TTL,
        clock: Callable[[], int] = now_ms,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.ttl = ttl
        self.clock = clock
        self.monotonic = monotonic
        self._snapshot_options: dict[str, Any] = (
            {"isolation_level": "REPEATABLE READ"} if engine.dialect.name == "postgresql" else {}
        )
        self._overviews: dict[tuple[int, int, int], _Kept] = {}
        self.reads = 0  # overviews read from the database (tests count them)

    @asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[AsyncConnection]:
        with transient_errors():
            async with self.engine.connect() as connection:
                connection = await connection.execution_options(**self._snapshot_options)
                async with connection.begin():
                    yield connection

    async def overview(self, minutes: int = 60, buckets: int = 60, top: int = 10) -> dict[str, Any]:
        key = (minutes, buckets, top)
        now = self.monotonic()
        kept = self._overviews.get(key)
        if kept is None or not kept.fresh(now, self.ttl):
            for stale in [k for k, old in self._overviews.items() if not old.fresh(now, self.ttl)]:
                del self._overviews[stale]
            kept = self._overviews[key] = _Kept(now, self._read_overview(minutes, buckets, top))
            kept.read.add_done_callback(lambda _: self._done(key, kept))
        # Every request while it is fresh shares it. Shielded: a client that goes away does not
        # cancel the read the others wait for.
        return await asyncio.shield(kept.read)

    def _done(self, key: tuple[int, int, int], kept: _Kept) -> None:
        kept.took = self.monotonic() - kept.started
        # A read that failed is not answered again: the next request reads anew.
        if (kept.read.cancelled() or kept.read.exception() is not None) and self._overviews.get(key) is kept:
            del self._overviews[key]

    async def _read_overview(self, minutes: int, buckets: int, top: int) -> dict[str, Any]:
        self.reads += 1
        window = overview_window(self.clock(), minutes, buckets)
        async with self._snapshot() as connection:
            now = await view.totals(connection)
            first = await view.first_position_since(connection, window.since, now.position)
            counted = await view.window_buckets(connection, window, first, now.position)
            rejected = await view.window_rejections(
                connection, window, await view.first_rejection_since(connection, window.since)
            )
            peaks = await view.top_sessions(connection, first, now.position, top)
        # The live connections at the end of each bucket: today's, less what came after it.
        connections = now.connections
        ends = []
        for bucket in reversed(counted):
            ends.append(connections)
            connections -= bucket.net
        ends.reverse()
        by_code: dict[str, int] = {}
        for codes in rejected:
            for code, count in codes.items():
                by_code[code] = by_code.get(code, 0) + count
        return {
            "position": now.position,
            "since": window.since,
            "until": window.until,
            "bucketMs": window.width,
            "sessions": now.sessions,
            "connections": now.connections,
            "records": sum(b.records for b in counted),
            "vetoes": sum(b.vetoes for b in counted),
            "synthetic": sum(b.synthetic for b in counted),
            "rejections": sum(by_code.values()),
            "rejectionsByCode": dict(sorted(by_code.items(), key=lambda item: (-item[1], item[0]))),
            "buckets": [
                {
                    "start": window.since + index * window.width,
                    "records": bucket.records,
                    "vetoes": bucket.vetoes,
                    "synthetic": bucket.synthetic,
                    "rejections": sum(rejected[index].values()),
                    "connections": ends[index],
                }
                for index, bucket in enumerate(counted)
            ],
            "topSessions": [{"sessionId": p.session_id, "peak": p.peak, "count": p.count} for p in peaks],
        }

    async def history(self, session_id: str, points: int = 600) -> dict[str, Any]:
        """The session's count over its latest HISTORY_RECORDS records in at most `points`
        points, each the last record of a run of records (with the run's lowest and highest
        count), and its latest vetoed and synthetic records (`marks`)."""
        async with self._snapshot() as connection:
            position, records = await view.session_extent(connection, session_id)
            first = max(1, records - HISTORY_RECORDS + 1)
            size = max(1, -(-(records - first + 1) // points))
            found = await view.history_points(connection, session_id, first, records, size) if records else []
            marks = (
                await view.history_marks(connection, session_id, first, records, HISTORY_MARKS)
                if records
                else []
            )
        return {
            "sessionId": session_id,
            "position": position,
            "records": records,
            "first": first if records else 0,
            "points": [
                {
                    "position": p.position,
                    "sequence": p.sequence,
                    "recordedAt": p.recorded_at,
                    "count": p.count,
                    "low": p.low,
                    "high": p.high,
                }
                for p in found
            ],
            "marks": marks,
        }
