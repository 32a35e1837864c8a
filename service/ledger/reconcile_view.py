"""What reconciliation reads of the ledger: the active sessions of a platform, and every
connection the ledger has seen in a session (tombstones too: a connection the ledger saw
leave was seen). Read without the writer lock; appends go through the pipeline."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Final, NamedTuple

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncEngine

from service.ledger.schema import connection_ledger, projection_connections, projection_sessions

__all__ = ["PAGE_SIZE", "SeenConnection", "active_sessions", "active_sessions_page", "seen_connections"]

# Active sessions read at a time.
PAGE_SIZE: Final = 1000


class SeenConnection(NamedTuple):
    live: bool
    creation_time: int
    data: str | None
    created_position: int | None


async def active_sessions_page(
    engine: AsyncEngine, sources: Sequence[str], after: str | None, limit: int
) -> list[str]:
    """Up to `limit` sessions with a live connection, any of whose events came from one of
    `sources` (those a platform's list can speak for), in session id order, each after `after`
    (None: from the first)."""
    s, ledger = projection_sessions.c, connection_ledger.c
    # The ledger's (session_id, sequence) index finds a session's records; most sessions hold
    # one source, so the first record looked at answers.
    of_source = exists().where(ledger.session_id == s.session_id, ledger.source_format.in_(sources))
    query = select(s.session_id).where(s.count > 0, of_source)
    if after is not None:
        # Keyset paging on the primary key: each page starts where the last one ended.
        query = query.where(s.session_id > after)
    query = query.order_by(s.session_id).limit(limit)
    async with engine.connect() as connection:
        return list((await connection.execute(query)).scalars())


async def active_sessions(
    engine: AsyncEngine, sources: Sequence[str], page_size: int | None = None
) -> AsyncGenerator[str, None]:
    """The active sessions of `sources` (active_sessions_page), read a page at a time: a pass
    over any number of sessions holds one page of them. A session that becomes active behind
    the page in hand is left for the next pass; one after it is still met in this one.
    `page_size`: PAGE_SIZE unless given."""
    page_size = page_size or PAGE_SIZE
    after: str | None = None
    while True:
        page = await active_sessions_page(engine, sources, after, page_size)
        for session_id in page:
            yield session_id
        if len(page) < page_size:
            return
        after = page[-1]


async def seen_connections(engine: AsyncEngine, session_id: str) -> dict[str, SeenConnection]:
    c = projection_connections.c
    query = select(c.connection_id, c.live, c.creation_time, c.data, c.created_position).where(
        c.session_id == session_id
    )
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).all()
    return {row[0]: SeenConnection(bool(row[1]), row[2], row[3], row[4]) for row in rows}
