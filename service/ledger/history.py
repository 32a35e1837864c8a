"""The ledger's history as indexes answer it (CONTRACT section 12): a session's count and live
set as of any position, the position as of any time, and the lives of its connections for
usage. Nothing here folds records: each answer is a few index lookups.

- The count as of position P is the `count_after` of the session's last record at or before P.
  Within a session, sequence and position grow together (both are assigned under the writer
  lock, in the order of the fold), so that record is found by a binary search over the
  session's sequence numbers, each step one lookup in the (session_id, sequence) index: some
  twenty lookups for a session of a million records, and no index more for every append to
  keep up.
- The position as of a time T is the last position recorded at or before T: a binary search
  over positions by `recorded_at`, each step one primary-key lookup. `recorded_at` is the
  appending instance's clock, read under the writer lock, so it does not go back from one
  position to the next unless the clocks of two instances disagree; then the answer is off by
  no more than their disagreement.
- The live set as of P is the session's connections created at or before P and not destroyed
  by P: the projection keeps each connection's created and destroyed positions, and those are
  exactly where the fold changed its state (service/projections/fold.py).
- A connection's life, for usage, runs from its applied create's timestamp to its applied
  destroy's: the projection keeps both beside the positions (created_event_time,
  destroyed_event_time), so a session's lives are one range of the projection's primary key,
  with no lookup of the ledger per connection.

Each binary search is one recursive statement, one round trip. None of these answers, as of a
position at or before the head, changes after it is given: appends add positions after the head
only, and a connection's destroyed position is set once, after its created one. So the
statements need no snapshot in common (nor a transaction of their own).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, String, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.ledger.append import CHECKPOINT
from service.projections.usage import Life

__all__ = [
    "connections_at",
    "count_at",
    "head",
    "lives",
    "lives_of_sessions",
    "position_as_of",
    "session_total",
    "sessions_after",
]

_HEAD = text("SELECT position FROM projection_checkpoints WHERE name = :checkpoint").bindparams(
    bindparam("checkpoint", type_=String())
)


def _last_at_or_before(upper: str, probe: str, limit: str) -> str:
    """A binary search in one recursive statement: the largest k in 1..`upper` whose `probe`
    (an expression of k, which grows with k) is at or below `limit`, or 0 when there is none.
    lo holds a k known to qualify (0 at first), hi the largest that still can; the middle is
    rounded up, so each step moves one of them and the search ends. With nothing to search
    (`upper` finds no row) it ends at once, with one row, lo = hi = 0."""
    middle = "(lo + hi + 1) / 2"
    qualifies = f"({probe.format(k=middle)}) <= {limit}"
    return f"""
WITH RECURSIVE search(lo, hi) AS (
  SELECT CAST(0 AS BIGINT), CAST(COALESCE(({upper}), 0) AS BIGINT)
  UNION ALL
  SELECT CASE WHEN {qualifies} THEN {middle} ELSE lo END,
         CASE WHEN {qualifies} THEN hi ELSE {middle} - 1 END
  FROM search WHERE lo < hi
)"""


# The last position recorded at or before :as_of.
_POSITION_AS_OF = text(
    _last_at_or_before(
        "SELECT position FROM projection_checkpoints WHERE name = :checkpoint",
        "SELECT recorded_at FROM connection_ledger WHERE position = {k}",
        ":as_of",
    )
    + " SELECT lo FROM search WHERE lo >= hi"
).bindparams(bindparam("checkpoint", type_=String()), bindparam("as_of", type_=BigInteger()))

# The session's last record at or before :at, by its sequence number, and its count; and the
# head, so that an `at` beyond it is refused by the same round trip.
_COUNT_AT = text(
    _last_at_or_before(
        "SELECT last_sequence FROM ledger_sessions WHERE session_id = :session_id",
        "SELECT position FROM connection_ledger WHERE session_id = :session_id AND sequence = {k}",
        ":at",
    )
    + " SELECT (SELECT count_after FROM connection_ledger"
    " WHERE session_id = :session_id AND sequence = search.lo),"
    " (SELECT position FROM projection_checkpoints WHERE name = :checkpoint) FROM search WHERE lo >= hi"
).bindparams(
    bindparam("session_id", type_=String()),
    bindparam("at", type_=BigInteger()),
    bindparam("checkpoint", type_=String()),
)

_CONNECTIONS_AT = text(
    "SELECT connection_id, creation_time, data FROM projection_connections "
    "WHERE session_id = :session_id AND created_position <= :at "
    "AND (destroyed_position IS NULL OR destroyed_position > :at) ORDER BY created_position"
).bindparams(bindparam("session_id", type_=String()), bindparam("at", type_=BigInteger()))

# Counted connections only: a tombstone that was never live has no created position.
_LIVES = (
    "SELECT {columns} p.created_event_time, p.destroyed_event_time, p.reason "
    "FROM projection_connections p WHERE {where} AND p.created_position IS NOT NULL"
)
_SESSION_LIVES = text(_LIVES.format(columns="", where="p.session_id = :session_id")).bindparams(
    bindparam("session_id", type_=String())
)
_RANGE_LIVES = text(
    _LIVES.format(columns="p.session_id,", where="p.session_id >= :first AND p.session_id <= :last")
    + " ORDER BY p.session_id"
).bindparams(bindparam("first", type_=String()), bindparam("last", type_=String()))
_SESSIONS_AFTER = text(
    "SELECT session_id FROM ledger_sessions WHERE session_id > :after ORDER BY session_id LIMIT :limit"
).bindparams(bindparam("after", type_=String()), bindparam("limit", type_=BigInteger()))


async def head(connection: AsyncConnection) -> int:
    """The ledger's head as the projection reflects it (the two commit together)."""
    value = (await connection.execute(_HEAD, {"checkpoint": CHECKPOINT})).scalar()
    return int(value or 0)


async def position_as_of(connection: AsyncConnection, as_of: int) -> int:
    """The last position recorded at or before `as_of` (ms), 0 when none is."""
    value = (await connection.execute(_POSITION_AS_OF, {"checkpoint": CHECKPOINT, "as_of": as_of})).scalar()
    return int(value or 0)


async def count_at(connection: AsyncConnection, session_id: str, at: int) -> tuple[int, int]:
    """The session's count as of position `at`, and the ledger's head."""
    parameters = {"session_id": session_id, "at": at, "checkpoint": CHECKPOINT}
    count, last = (await connection.execute(_COUNT_AT, parameters)).one()
    return int(count or 0), int(last or 0)


async def connections_at(connection: AsyncConnection, session_id: str, at: int) -> list[dict[str, Any]]:
    """The session's live connections as of position `at`, in the order they were created."""
    rows = (await connection.execute(_CONNECTIONS_AT, {"session_id": session_id, "at": at})).all()
    return [{"connectionId": r[0], "creationTime": r[1], "data": r[2]} for r in rows]


async def lives(connection: AsyncConnection, session_id: str) -> list[Life]:
    """The session's counted connections, for usage."""
    rows = (await connection.execute(_SESSION_LIVES, {"session_id": session_id})).all()
    return [Life(r[0], r[1], r[2]) for r in rows]


async def sessions_after(connection: AsyncConnection, after: str, limit: int) -> list[str]:
    """The next `limit` sessions with a record, in session id order, after `after`."""
    return list((await connection.execute(_SESSIONS_AFTER, {"after": after, "limit": limit})).scalars())


async def session_total(connection: AsyncConnection) -> int:
    return int((await connection.execute(text("SELECT count(*) FROM ledger_sessions"))).scalar() or 0)


async def lives_of_sessions(connection: AsyncConnection, sessions: Sequence[str]) -> dict[str, list[Life]]:
    """The counted connections of every session from sessions[0] to sessions[-1] (in id order),
    by session; a session with none is left out."""
    if not sessions:
        return {}
    found: dict[str, list[Life]] = {}
    rows = (await connection.execute(_RANGE_LIVES, {"first": sessions[0], "last": sessions[-1]})).all()
    for row in rows:
        found.setdefault(row[0], []).append(Life(row[1], row[2], row[3]))
    return found
