"""Two writers that interleave through the writer lock both append, and a rebuild that waited
for it sees every append before it, on SQLite and PostgreSQL. On PostgreSQL the database's
default isolation is REPEATABLE READ, as an operator may set it: the ledger's transactions say
READ COMMITTED themselves (see ledger/postgres.py), or the writer that waited would read the
head as it was before the lock and reuse the other's positions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from service.app.bootstrap import open_ledger
from service.ledger.append import CHECKPOINT
from service.ledger.checkpoints import read_checkpoint
from service.settings import load_settings
from tests.helpers import created, destroyed, writer_lock_held

# Long enough for both writers to be waiting on the lock when it is let go.
WAIT = 0.5


def _dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
async def repeatable_read(database_url: str) -> str:
    """The database, with REPEATABLE READ as its default isolation on PostgreSQL."""
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        admin = await asyncpg.connect(_dsn(database_url))
        try:
            await admin.execute(
                f"ALTER DATABASE {url.database} SET default_transaction_isolation = 'repeatable read'"
            )
            # It applies to new connections: check on one.
            check = await asyncpg.connect(_dsn(database_url))
            try:
                assert await check.fetchval("SHOW default_transaction_isolation") == "repeatable read"
            finally:
                await check.close()
        finally:
            await admin.close()
    return database_url


async def _interleaved(
    database_url: str, first: Callable[[], Awaitable[Any]], second: Callable[[], Awaitable[Any]]
) -> tuple[Any, Any]:
    """Start `first`, then `second`, both while the writer lock is held elsewhere; let it go."""
    async with writer_lock_held(database_url):
        one = asyncio.ensure_future(first())
        await asyncio.sleep(WAIT / 2)
        two = asyncio.ensure_future(second())
        await asyncio.sleep(WAIT)
        assert not one.done(), "the first waits for the lock"
        assert not two.done(), "the second waits for the lock"
    return await one, await two


async def test_two_writers_waiting_for_the_lock_both_append(repeatable_read: str) -> None:
    settings = load_settings(database_url=repeatable_read, hooks="")
    async with open_ledger(settings) as a, open_ledger(settings) as b:
        first, second = await _interleaved(
            repeatable_read,
            lambda: a.pipeline.process([created("a1", connection="ca"), created("a2", connection="cb")]),
            # Another session: nothing of the first's rows to collide with but the positions.
            lambda: b.pipeline.process([created("b1", "s2", "cc"), destroyed("b2", "s2", "cc")]),
        )
        assert first.tally().appended == 2
        assert second.tally().appended == 2
        # And once more each, after the interleaving: nothing was left in a bad state.
        await a.pipeline.process([created("a3", connection="cc")])
        await b.pipeline.process([created("b3", "s2", "cd")])
        rows = [row async for page in a.store.records() for row in page]
        assert [row[0] for row in rows] == [1, 2, 3, 4, 5, 6]  # positions: gap-free
        sequences = {(row[3], row[1]) for row in rows}
        assert sequences == {("s1", 1), ("s1", 2), ("s1", 3), ("s2", 1), ("s2", 2), ("s2", 3)}
        assert (await a.queries.count("s1"))["count"] == 3
        assert (await b.queries.count("s2"))["count"] == 1


async def test_a_rebuild_that_waited_for_an_append_rebuilds_it_too(repeatable_read: str) -> None:
    settings = load_settings(database_url=repeatable_read, hooks="")
    async with open_ledger(settings) as a, open_ledger(settings) as b:
        await a.pipeline.process([created("a1", connection="ca")])
        appended, head = await _interleaved(
            repeatable_read,
            lambda: a.pipeline.process([created("a2", connection="cb"), created("a3", connection="cc")]),
            b.store.rebuild,
        )
        assert appended.tally().appended == 2
        # The lock is granted in either order (SQLite's waiters retry, PostgreSQL's queue):
        # whichever came first, the projection holds all three and its checkpoint says so.
        assert head in {1, 3}
        assert (await b.queries.count("s1"))["count"] == 3
        assert await read_checkpoint(b.store.engine, CHECKPOINT) == 3
        # The projection goes on from where the rebuild left it.
        await b.pipeline.process([destroyed("b1", connection="ca")])
        assert (await a.queries.count("s1"))["count"] == 2
