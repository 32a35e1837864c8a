"""What reconciliation reads of the ledger: the active sessions of a platform, and every
connection the ledger has seen in a session (tombstones too: a connection the ledger saw
leave was seen). Read without the writer lock; appends go through the pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncEngine

from service.ledger.schema import connection_ledger, projection_connections, projection_sessions

__all__ = ["SeenConnection", "active_sessions", "seen_connections"]


class SeenConnection(NamedTuple):
    live: bool
    creation_time: int
    data: str | None
    created_position: int | None


async def active_sessions(engine: AsyncEngine, sources: Sequence[str]) -> list[str]:
    """Sessions with a live connection, any of whose events came from one of `sources`: those
    a platform's list can speak for."""
    s, ledger = projection_sessions.c, connection_ledger.c
    # The ledger's (session_id, sequence) index finds a session's records; most sessions hold
    # one source, so the first record looked at answers.
    of_source = exists().where(ledger.session_id == s.session_id, ledger.source_format.in_(sources))
    query = select(s.session_id).where(s.count > 0, of_source).order_by(s.session_id)
    async with engine.connect() as connection:
        return list((await connection.execute(query)).scalars())


async def seen_connections(engine: AsyncEngine, session_id: str) -> dict[str, SeenConnection]:
    c = projection_connections.c
    query = select(c.connection_id, c.live, c.creation_time, c.data, c.created_position).where(
        c.session_id == session_id
    )
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).all()
    return {row[0]: SeenConnection(bool(row[1]), row[2], row[3], row[4]) for row in rows}
