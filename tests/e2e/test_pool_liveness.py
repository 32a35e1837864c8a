"""Pooled PostgreSQL connections are checked with a round trip only after they have been idle
(service/ledger/pool_liveness.py), and a dead one is replaced, on a real server."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from service.errors import TransientError
from service.ledger.database import create_engine
from service.ledger.pool_liveness import IDLE_BEFORE_PING
from service.ledger.store import transient_errors


async def _backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _terminate(database_url: str, pid: int) -> None:
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(dsn)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


def _count_pings(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    dialect = engine.sync_engine.dialect
    pings: list[int] = []
    ping = dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(1)
        return ping(dbapi_connection)

    monkeypatch.setattr(dialect, "do_ping", counted)
    return pings


async def test_a_connection_in_use_is_not_pinged_and_an_idle_one_is(
    fresh_postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(fresh_postgres, pool_size=1)
    try:
        pings = _count_pings(engine, monkeypatch)
        first = await _backend_pid(engine)  # a new connection: not pinged
        for _ in range(20):
            assert await _backend_pid(engine) == first
        assert pings == []
        await asyncio.sleep(IDLE_BEFORE_PING + 0.2)
        assert await _backend_pid(engine) == first
        assert len(pings) == 1
    finally:
        await engine.dispose()


async def test_a_connection_that_died_while_idle_is_replaced_at_checkout(fresh_postgres: str) -> None:
    engine = create_engine(fresh_postgres, pool_size=1)
    try:
        first = await _backend_pid(engine)
        await _terminate(fresh_postgres, first)
        await asyncio.sleep(IDLE_BEFORE_PING + 0.2)
        # The ping finds it dead; the pool connects anew and the caller never sees an error.
        second = await _backend_pid(engine)
        assert second != first
    finally:
        await engine.dispose()


async def test_a_connection_that_died_just_after_use_fails_once_as_transient(fresh_postgres: str) -> None:
    engine = create_engine(fresh_postgres, pool_size=1)
    try:
        first = await _backend_pid(engine)
        await _terminate(fresh_postgres, first)
        # Within the window the connection is trusted: the statement fails, as a disconnect
        # halfway through a transaction does, and is retryable; the pool is then invalidated.
        with pytest.raises(TransientError), transient_errors():
            await _backend_pid(engine)
        assert await _backend_pid(engine) != first
    finally:
        await engine.dispose()
