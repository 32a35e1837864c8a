"""Reading the projections: a session's count and live connections (now, or as of a position
or a time), its usage over a window, and the session list.

Each answer carries `position`: the ledger position the answer reflects, read in the same
snapshot as the answer itself (the projection's checkpoint, or the position asked for).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.errors import InvalidQuery
from service.events import MAX_POSITION, is_session_id
from service.ledger import history
from service.ledger.append import CHECKPOINT
from service.ledger.store import now_ms, transient_errors
from service.projections.usage import usage

__all__ = [
    "USAGE_PAGE_SESSIONS",
    "AsOf",
    "ProjectionQueries",
    "SessionPage",
    "UsageWindow",
    "decode_cursor",
    "encode_cursor",
]

# Sessions read at a time by `usage_of_every_session`: its memory is one page's connections.
USAGE_PAGE_SESSIONS = 500

_COUNT = text(
    "SELECT (SELECT position FROM projection_checkpoints WHERE name = :checkpoint), "
    "(SELECT count FROM projection_sessions WHERE session_id = :session_id)"
)
_CONNECTIONS = text(
    "SELECT connection_id, creation_time, data FROM projection_connections "
    "WHERE session_id = :session_id AND live ORDER BY created_position"
)
_ACTIVE = text(
    "SELECT session_id, count FROM projection_sessions "
    "WHERE count > 0 AND session_id > :cursor ORDER BY session_id LIMIT :limit"
)
_ALL = text(
    "SELECT s.session_id, coalesce(p.count, 0) FROM ledger_sessions s "
    "LEFT JOIN projection_sessions p ON p.session_id = s.session_id "
    "WHERE s.session_id > :cursor ORDER BY s.session_id LIMIT :limit"
)


def encode_cursor(session_id: str) -> str:
    return base64.urlsafe_b64encode(session_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str:
    """The session id after which a page starts; raises ValueError on a cursor we did not issue."""
    if not cursor:
        return ""
    padded = cursor + "=" * (-len(cursor) % 4)
    decoded = base64.b64decode(padded.encode(), altchars=b"-_", validate=True).decode()
    if not is_session_id(decoded):
        raise ValueError("a cursor names the session a page ends with")
    return decoded


@dataclass(frozen=True, slots=True)
class AsOf:
    """When a query answers as of: a position (`at`), a time (`as_of`, ms, compared with
    recordedAt), or neither (now). Both at once is refused by `check`."""

    at: int | None = None
    as_of: int | None = None

    def check(self) -> AsOf:
        if self.at is not None and self.as_of is not None:
            raise InvalidQuery("give at (a position) or asOf (a time), not both", "asOf")
        return self

    @property
    def now(self) -> bool:
        return self.at is None and self.as_of is None


@dataclass(frozen=True, slots=True)
class UsageWindow:
    """`[start, end)` in ms of event time; unset ends are the session's whole life so far (0,
    and the time of the query)."""

    start: int | None = None
    end: int | None = None

    def resolve(self) -> tuple[int, int]:
        start = 0 if self.start is None else self.start
        end = now_ms() if self.end is None else self.end
        for name, value in (("from", start), ("to", end)):
            if not 0 <= value <= MAX_POSITION:
                raise InvalidQuery(f"{name} must be an integer from 0 to {MAX_POSITION} (ms)", name)
        if start > end:
            raise InvalidQuery(
                f"from ({start}) is after to ({end}): the window would end before it starts", "from"
            )
        return start, end


@dataclass(frozen=True, slots=True)
class SessionPage:
    sessions: list[dict[str, Any]]
    next: str | None


class ProjectionQueries:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._snapshot_options: dict[str, Any] = (
            {"isolation_level": "REPEATABLE READ"} if engine.dialect.name == "postgresql" else {}
        )

    async def _count(self, connection: AsyncConnection, session_id: str) -> tuple[int, int]:
        row = (await connection.execute(_COUNT, {"checkpoint": CHECKPOINT, "session_id": session_id})).one()
        return int(row[1] or 0), int(row[0] or 0)

    async def count(self, session_id: str, when: AsOf = AsOf()) -> dict[str, Any]:
        if not when.check().now:
            return await self._history(session_id, when, connections=False)
        with transient_errors():
            async with self.engine.connect() as connection:
                count, position = await self._count(connection, session_id)
        return {"sessionId": session_id, "count": count, "position": position}

    async def connections(self, session_id: str, when: AsOf = AsOf()) -> dict[str, Any]:
        if not when.check().now:
            return await self._history(session_id, when, connections=True)
        with transient_errors():
            async with self.engine.connect() as connection:
                connection = await connection.execution_options(**self._snapshot_options)
                async with connection.begin():
                    # One snapshot for both statements, so count, position and list agree.
                    count, position = await self._count(connection, session_id)
                    rows = (await connection.execute(_CONNECTIONS, {"session_id": session_id})).all()
        return {
            "sessionId": session_id,
            "count": count,
            "position": position,
            "connections": [{"connectionId": r[0], "creationTime": r[1], "data": r[2]} for r in rows],
        }

    async def _history(self, session_id: str, when: AsOf, *, connections: bool) -> dict[str, Any]:
        """The session as of a position or a time (service/ledger/history.py says how)."""
        with transient_errors():
            async with self.engine.connect() as connection:
                # No snapshot in common: the answer as of a position at or before the head
                # never changes (service/ledger/history.py), so each statement may read its own.
                if when.as_of is not None:
                    position = await history.position_as_of(connection, when.as_of)
                    count, _ = await history.count_at(connection, session_id, position)
                else:
                    position = when.at or 0
                    count, last = await history.count_at(connection, session_id, position)
                    if position > last:
                        raise InvalidQuery(f"at ({position}) is beyond the ledger's head ({last})", "at")
                live = await history.connections_at(connection, session_id, position) if connections else None
        answer: dict[str, Any] = {"sessionId": session_id, "count": count, "position": position}
        if live is not None:
            answer["connections"] = live
        return answer

    async def usage(self, session_id: str, window: UsageWindow = UsageWindow()) -> dict[str, Any]:
        """The session's usage over the window (service/projections/usage.py defines it); a
        session with no record has an empty usage, not an error."""
        start, end = window.resolve()
        with transient_errors():
            async with self.engine.connect() as connection:
                connection = await connection.execution_options(**self._snapshot_options)
                async with connection.begin():
                    position = await history.head(connection)
                    lives = await history.lives(connection, session_id)
        return {**usage(session_id, lives, start, end), "position": position}

    async def session_total(self) -> int:
        """How many sessions have a record (for a progress bar)."""
        with transient_errors():
            async with self.engine.connect() as connection:
                return await history.session_total(connection)

    async def usage_of_every_session(
        self, window: UsageWindow = UsageWindow()
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The usage of every session with a record, in session id order, a page of
        USAGE_PAGE_SESSIONS sessions at a time: memory is one page's connections. Each page is
        read in a snapshot of its own; `position` says which."""
        start, end = window.resolve()
        after = ""
        while True:
            with transient_errors():
                async with self.engine.connect() as connection:
                    connection = await connection.execution_options(**self._snapshot_options)
                    async with connection.begin():
                        position = await history.head(connection)
                        sessions = await history.sessions_after(connection, after, USAGE_PAGE_SESSIONS)
                        lives = await history.lives_of_sessions(connection, sessions)
            if not sessions:
                return
            yield [
                {**usage(session_id, lives.get(session_id, ()), start, end), "position": position}
                for session_id in sessions
            ]
            after = sessions[-1]

    async def head(self) -> int:
        with transient_errors():
            async with self.engine.connect() as connection:
                return (await self._count(connection, ""))[1]

    async def sessions(
        self, *, active: bool = True, limit: int = 100, cursor: str | None = None
    ) -> SessionPage:
        after = decode_cursor(cursor)
        with transient_errors():
            async with self.engine.connect() as connection:
                rows = (
                    await connection.execute(
                        _ACTIVE if active else _ALL, {"cursor": after, "limit": limit + 1}
                    )
                ).all()
        page = [{"sessionId": r[0], "count": int(r[1])} for r in rows[:limit]]
        following = encode_cursor(page[-1]["sessionId"]) if len(rows) > limit and page else None
        return SessionPage(page, following)
