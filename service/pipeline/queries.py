"""Reading the projections: a session's count and live connections, and the session list.

Each answer carries `position`, the ledger position the projection reflects (its checkpoint),
read in the same snapshot as the answer itself.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.events import is_session_id
from service.ledger.append import CHECKPOINT
from service.ledger.store import transient_errors

__all__ = ["ProjectionQueries", "SessionPage", "decode_cursor", "encode_cursor"]

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

    async def count(self, session_id: str) -> dict[str, Any]:
        with transient_errors():
            async with self.engine.connect() as connection:
                count, position = await self._count(connection, session_id)
        return {"sessionId": session_id, "count": count, "position": position}

    async def connections(self, session_id: str) -> dict[str, Any]:
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
