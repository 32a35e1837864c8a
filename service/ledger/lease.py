"""A lease that at most one process holds at a time, for work that must not run twice at once
(the relay). PostgreSQL: a session-level advisory lock on a connection kept open, released by
the server when that connection dies, so another instance takes over. SQLite: an exclusive
lock on a file beside the database, released by the OS when the process dies.

On PostgreSQL the lock can be lost while this process goes on: the server terminated the
lease's connection (`pg_terminate_backend`, an idle timeout), or a proxy or firewall cut it.
Nothing tells the holder; it finds out only when it next uses that connection. So a holder
asks `still_held` before each piece of work that only the holder may do, and stops when the
answer is no: by then another instance may hold the lock and be doing that work. The question
is one round trip on the lease's connection that looks the lock up in `pg_locks` for this
connection's backend, rather than a bare `SELECT 1`: a connection that answers is not proof
that the lock is on it (a pooler in between may hand the session to another backend)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["Lease"]

# How long the check may take before the lease is taken for lost: a connection that does not
# answer in that time may have been cut without a word (a proxy), and waiting on would let the
# holder's work go on past the moment another instance took over.
CHECK_SECONDS = 5.0
# An advisory lock on one bigint key shows in pg_locks as classid (its high 32 bits), objid (its
# low 32 bits) and objsubid 1. Asked on the driver's connection itself (asyncpg): the relay asks
# before every chunk, and through SQLAlchemy the question cost the client 2.7 times the CPU.
_STILL_OURS = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
    "AND granted AND classid = $1 AND objid = $2 AND objsubid = 1)"
)


def _key_parts(key: int) -> tuple[int, int]:
    """(classid, objid) under which pg_locks shows the advisory lock on bigint `key`."""
    return (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF


class Lease:
    def __init__(self, engine: AsyncEngine, key: int) -> None:
        self.engine = engine
        self.key = key
        self._connection: AsyncConnection | None = None
        self._driver: Any = None  # the asyncpg connection under _connection
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this process took the lease and has not let it go. On PostgreSQL that says
        nothing of the lock now: see `still_held`."""
        return self._connection is not None or self._fd is not None

    async def try_acquire(self) -> bool:
        if self.held:
            return True
        if self.engine.dialect.name == "postgresql":
            connection = await self.engine.connect()
            driver = (await connection.get_raw_connection()).driver_connection
            got = await connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key})
            await connection.commit()
            if got:
                self._connection, self._driver = connection, driver
                return True
            await connection.close()
            return False
        database = make_url(self.engine.url).database or "ledger"
        path = Path(f"{database}.lease-{self.key}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    async def still_held(self) -> bool:
        """Whether the lease is still this process's. A lease found lost is let go here (its
        connection closed, not returned to the pool), so that `try_acquire` may take it again
        once nobody else holds it."""
        if self._fd is not None:
            return True  # a flock lasts as long as the descriptor: nobody can take it from us
        connection = self._connection
        if connection is None:
            return False
        try:
            high, low = _key_parts(self.key)
            ours = bool(await self._driver.fetchval(_STILL_OURS, high, low, timeout=CHECK_SECONDS))
        except Exception:  # the connection is gone (or mute): so is the lock on it
            ours = False
        if not ours:
            self._connection = self._driver = None
            await _discard(connection)
        return ours

    async def release(self) -> None:
        connection, self._connection, self._driver = self._connection, None, None
        if connection is not None:
            try:
                await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
                await connection.commit()
            except Exception:  # a dead connection has released it already
                await _discard(connection)
            else:
                with contextlib.suppress(Exception):
                    await connection.close()
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


async def _discard(connection: AsyncConnection) -> None:
    """Close a lease connection for good rather than return it to the pool: were it alive after
    all, with the lock on it, the lock must go with it, not stay on a pooled connection that
    some query holds next."""
    with contextlib.suppress(Exception):
        await connection.invalidate()
    with contextlib.suppress(Exception):
        await connection.close()
