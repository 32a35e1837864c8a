"""Live connections of the projection created at or before a moment: what the expirer destroys.
Read without the writer lock; the expirer appends through the pipeline, which checks again."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from service.ledger.schema import projection_connections

__all__ = ["AgedConnection", "aged_connections"]


class AgedConnection(NamedTuple):
    creation_time: int
    session_id: str
    connection_id: str
    data: str | None
    created_position: int | None


async def aged_connections(
    engine: AsyncEngine,
    created_by: int,
    after: tuple[int, str, str] | None,
    limit: int,
) -> list[AgedConnection]:
    """Up to `limit` live connections whose creationTime is at most `created_by` (ms), in
    (creationTime, sessionId, connectionId) order after `after`: a keyset page, so a pass goes
    through every one whatever the hooks did to those before."""
    c = projection_connections.c
    query = (
        select(c.creation_time, c.session_id, c.connection_id, c.data, c.created_position)
        .where(c.live, c.creation_time <= created_by)
        .order_by(c.creation_time, c.session_id, c.connection_id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(tuple_(c.creation_time, c.session_id, c.connection_id) > tuple_(*after))
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).all()
    return [AgedConnection(*row) for row in rows]
