"""What the dashboard reads of the ledger: a time window's records and rejections per bucket,
the sessions with the highest count in it, and one session's count over its records,
down-sampled. Read without the writer lock, on a connection the caller holds (one snapshot).

Every read is bounded by an index. A window starts at a position found by binary search over
the primary key on `recorded_at`: positions are assigned in commit order, and `recorded_at` is
the appending instance's clock, so it does not go down in practice (a record whose clock ran
behind lands in the window's first bucket, one whose clock ran ahead in its last). Rejected
messages are found the same way by id on `received_at`. A session's records are read by its
`(session_id, sequence)` index; sequences run 1, 2, 3 ... in each session.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.ledger.append import CHECKPOINT

__all__ = [
    "Bucket",
    "HistoryPoint",
    "Peak",
    "Totals",
    "Window",
    "first_position_since",
    "first_rejection_since",
    "history_marks",
    "history_points",
    "session_extent",
    "top_sessions",
    "totals",
    "window_buckets",
    "window_rejections",
]

_RECORDED_AT = text(
    "SELECT recorded_at FROM connection_ledger WHERE position >= :key ORDER BY position LIMIT 1"
)
_RECEIVED_AT = text("SELECT received_at FROM rejected_messages WHERE id >= :key ORDER BY id LIMIT 1")
_REJECTED_IDS = text("SELECT min(id), max(id) FROM rejected_messages")
_TOTALS = text(
    "SELECT (SELECT position FROM projection_checkpoints WHERE name = :checkpoint), "
    "count(*), coalesce(sum(count), 0) FROM projection_sessions WHERE count > 0"
)


def _bucket(column: str) -> str:
    """The bucket of a time column: clamped into the window, so that a record whose clock ran
    behind or ahead of the others still counts, in the first or the last bucket."""
    return (
        f"CASE WHEN {column} < :since THEN 0 WHEN {column} >= :until THEN :last "
        f"ELSE ({column} - :since) / :width END"
    )


# The window's records by bucket: how many, vetoed, synthetic, and the change they made to the
# live connections (each record's count less its session's count before it, found by the
# (session_id, sequence) index: a probe a record costs less than sorting the window by session).
_BEFORE = (
    "coalesce((SELECT p.count_after FROM connection_ledger p "
    "WHERE p.session_id = l.session_id AND p.sequence = l.sequence - 1), 0)"
)
_BUCKETS = text(
    f"SELECT {_bucket('l.recorded_at')} AS bucket, count(*), "
    "sum(CASE WHEN l.default_prevented THEN 1 ELSE 0 END), "
    f"sum(CASE WHEN l.origin IS NULL THEN 0 ELSE 1 END), sum(l.count_after - {_BEFORE}) "
    "FROM connection_ledger l WHERE l.position >= :first AND l.position <= :head GROUP BY bucket"
)
# A session's peak in the window: the highest count of its records there, or the count it
# entered the window with (its record before the first in the window). A session with no
# record in the window kept its count all along, so the highest of those are among the highest
# counts now.
_TOP = text(
    "SELECT t.session_id, t.peak, coalesce(s.count, 0) FROM ("
    "SELECT session_id, max(peak) AS peak FROM ("
    "SELECT g.session_id, CASE WHEN e.count_after > g.high THEN e.count_after ELSE g.high END AS peak "
    "FROM (SELECT session_id, max(count_after) AS high, min(sequence) AS entry FROM connection_ledger "
    "WHERE position >= :first AND position <= :head GROUP BY session_id) g "
    "LEFT JOIN connection_ledger e ON e.session_id = g.session_id AND e.sequence = g.entry - 1 "
    "UNION ALL SELECT a.session_id, a.count FROM (SELECT session_id, count FROM projection_sessions "
    "WHERE count > 0 ORDER BY count DESC, session_id LIMIT :top) a"
    ") c GROUP BY session_id ORDER BY peak DESC, session_id LIMIT :top"
    ") t LEFT JOIN projection_sessions s ON s.session_id = t.session_id "
    "ORDER BY t.peak DESC, t.session_id"
)
_REJECTIONS = text(
    f"SELECT {_bucket('received_at')} AS bucket, code, count(*) FROM rejected_messages "
    "WHERE id >= :first GROUP BY bucket, code"
)

_EXTENT = text(
    "SELECT (SELECT position FROM projection_checkpoints WHERE name = :checkpoint), "
    "(SELECT last_sequence FROM ledger_sessions WHERE session_id = :session_id)"
)
# Each bucket of `size` sequences, from `first`, answered by its last record with the lowest
# and highest count in it.
_POINTS = text(
    "SELECT l.position, l.sequence, l.recorded_at, l.count_after, b.low, b.high FROM ("
    "SELECT (sequence - :first) / :size AS bucket, max(sequence) AS closing, "
    "min(count_after) AS low, max(count_after) AS high FROM connection_ledger "
    "WHERE session_id = :session_id AND sequence >= :first AND sequence <= :last GROUP BY bucket"
    ") b JOIN connection_ledger l ON l.session_id = :session_id AND l.sequence = b.closing "
    "ORDER BY l.sequence"
)
_MARKS = text(
    "SELECT position, sequence, recorded_at, type, connection_id, count_after, default_prevented, "
    "prevented_by, origin FROM connection_ledger "
    "WHERE session_id = :session_id AND sequence >= :first AND sequence <= :last "
    "AND (default_prevented OR origin IS NOT NULL) ORDER BY sequence DESC LIMIT :limit"
)


@dataclass(frozen=True, slots=True)
class Window:
    """`buckets` buckets of `width` ms from `since` (ms since the epoch)."""

    since: int
    width: int
    buckets: int

    @property
    def until(self) -> int:
        return self.since + self.width * self.buckets

    def parameters(self) -> dict[str, int]:
        return {"since": self.since, "until": self.until, "width": self.width, "last": self.buckets - 1}


@dataclass(frozen=True, slots=True)
class Totals:
    position: int
    sessions: int
    connections: int


@dataclass(slots=True)
class Bucket:
    records: int = 0
    vetoes: int = 0
    synthetic: int = 0
    # The change of the live connections over every session.
    net: int = 0


@dataclass(frozen=True, slots=True)
class Peak:
    session_id: str
    peak: int
    count: int


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    position: int
    sequence: int
    recorded_at: int
    count: int
    low: int
    high: int


async def _first_since(
    connection: AsyncConnection, statement: TextClause, low: int, high: int, since: int
) -> int:
    """The lowest key in [low, high) whose time is at least `since` (`high` when none is),
    by binary search: each look one index probe."""
    while low < high:
        middle = (low + high) // 2
        at = await connection.scalar(statement, {"key": middle})
        if at is None or at >= since:
            high = middle
        else:
            low = middle + 1
    return low


async def totals(connection: AsyncConnection) -> Totals:
    """The head the projection reflects, the active sessions and their connections."""
    row = (await connection.execute(_TOTALS, {"checkpoint": CHECKPOINT})).one()
    return Totals(int(row[0] or 0), int(row[1]), int(row[2]))


async def first_position_since(connection: AsyncConnection, since: int, head: int) -> int:
    """The first position recorded at or after `since`; head + 1 when none is."""
    return await _first_since(connection, _RECORDED_AT, 1, head + 1, since)


async def first_rejection_since(connection: AsyncConnection, since: int) -> int | None:
    """The id of the first rejected message received at or after `since`; None when none is."""
    low, high = (await connection.execute(_REJECTED_IDS)).one()
    if low is None:
        return None
    first = await _first_since(connection, _RECEIVED_AT, int(low), int(high) + 1, since)
    return None if first > int(high) else first


async def window_buckets(connection: AsyncConnection, window: Window, first: int, head: int) -> list[Bucket]:
    """The records at positions first .. head, counted into the window's buckets."""
    found = [Bucket() for _ in range(window.buckets)]
    if first > head:
        return found
    parameters = {**window.parameters(), "first": first, "head": head}
    for row in (await connection.execute(_BUCKETS, parameters)).all():
        bucket = found[int(row[0])]
        bucket.records, bucket.vetoes, bucket.synthetic, bucket.net = (int(value) for value in row[1:])
    return found


async def window_rejections(
    connection: AsyncConnection, window: Window, first: int | None
) -> list[dict[str, int]]:
    """Each bucket's rejected messages from id `first` on, by code."""
    found: list[dict[str, int]] = [{} for _ in range(window.buckets)]
    if first is None:
        return found
    for bucket, code, count in (
        await connection.execute(_REJECTIONS, {**window.parameters(), "first": first})
    ).all():
        found[int(bucket)][str(code)] = int(count)
    return found


async def top_sessions(connection: AsyncConnection, first: int, head: int, top: int) -> list[Peak]:
    """The `top` sessions with the highest count over positions first .. head (and since)."""
    rows = (await connection.execute(_TOP, {"first": first, "head": head, "top": top})).all()
    return [Peak(str(row[0]), int(row[1]), int(row[2])) for row in rows]


async def session_extent(connection: AsyncConnection, session_id: str) -> tuple[int, int]:
    """(the head the projection reflects, the session's number of records)."""
    row = (await connection.execute(_EXTENT, {"checkpoint": CHECKPOINT, "session_id": session_id})).one()
    return int(row[0] or 0), int(row[1] or 0)


async def history_points(
    connection: AsyncConnection, session_id: str, first: int, last: int, size: int
) -> list[HistoryPoint]:
    """The session's records with sequences first .. last in buckets of `size`, each answered
    by its last record, with the lowest and highest count of the bucket."""
    parameters = {"session_id": session_id, "first": first, "last": last, "size": size}
    rows = (await connection.execute(_POINTS, parameters)).all()
    return [HistoryPoint(*(int(value) for value in row)) for row in rows]


async def history_marks(
    connection: AsyncConnection, session_id: str, first: int, last: int, limit: int
) -> list[dict[str, object]]:
    """The latest `limit` of the session's vetoed and synthetic records with sequences
    first .. last, in position order."""
    parameters = {"session_id": session_id, "first": first, "last": last, "limit": limit}
    rows = (await connection.execute(_MARKS, parameters)).all()
    return [
        {
            "position": row[0],
            "sequence": row[1],
            "recordedAt": row[2],
            "type": row[3],
            "connectionId": row[4],
            "count": row[5],
            "defaultPrevented": bool(row[6]),
            "preventedBy": row[7],
            "origin": row[8],
        }
        for row in reversed(rows)
    ]
