"""The ledger on SQLite (the embedded default).

SQLite has one writer at a time, and BEGIN IMMEDIATE takes the write lock when the transaction
starts. That lock is the writer lock of the append path: positions are read and assigned while
it is held, so they are gap-free and commit in order without anything more.

Calls go to aiosqlite's connection directly (one thread hop per statement) rather than through
SQLAlchemy's result machinery, which would cost more than the insert itself on this path.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from service.ledger.append import CHECKPOINT, ConnectionKey, LedgerRow, RejectionRow
from service.ledger.model import ExistingEvent
from service.ledger.records import RECORD_COLUMNS, REJECTED_COLUMNS
from service.ledger.schema import LEDGER_COLUMNS
from service.ledger.store import LedgerStore, keyset_pages, transient_errors
from service.projections.fold import ConnectionState
from service.projections.rebuild import REBUILD_CONNECTIONS, REBUILD_SESSIONS

__all__ = ["SqliteStore"]

# Far below SQLite's limit of 32766 bound parameters per statement.
_CHUNK = 4000
_EXISTING = (
    "SELECT event_id, position, type, session_id, event_time, connection_id, creation_time, "
    "data, reason, project_id FROM connection_ledger WHERE event_id IN ({})"
)
_INSERT_LEDGER = (
    f"INSERT INTO connection_ledger ({', '.join(LEDGER_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(LEDGER_COLUMNS))})"
)


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class _SqliteUnit:
    def __init__(self, db: Any) -> None:
        self.db = db

    async def head(self) -> int:
        rows = await self.db.execute_fetchall("SELECT coalesce(max(position), 0) FROM connection_ledger")
        return int(rows[0][0])

    async def existing(self, ids: Sequence[str]) -> dict[str, ExistingEvent]:
        found: dict[str, ExistingEvent] = {}
        for chunk in _chunks(ids):
            for row in await self.db.execute_fetchall(_EXISTING.format(_marks(len(chunk))), chunk):
                found[row[0]] = ExistingEvent(row[1], tuple(row[2:]))
        return found

    async def session_state(self, session_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        found: dict[str, tuple[int, int]] = {}
        for chunk in _chunks(session_ids):
            rows = await self.db.execute_fetchall(
                "SELECT s.session_id, s.last_sequence, coalesce(p.count, 0) "
                "FROM ledger_sessions s LEFT JOIN projection_sessions p "
                "ON p.session_id = s.session_id "
                f"WHERE s.session_id IN ({_marks(len(chunk))})",
                chunk,
            )
            for session_id, last_sequence, count in rows:
                found[session_id] = (last_sequence, count)
        return found

    async def connection_states(self, keys: Sequence[ConnectionKey]) -> dict[ConnectionKey, ConnectionState]:
        found: dict[ConnectionKey, ConnectionState] = {}
        for chunk in _chunks(keys, _CHUNK // 2):
            values = ",".join(["(?,?)"] * len(chunk))
            params = [part for key in chunk for part in key]
            # A join, not `(a, b) IN (VALUES ...)`: SQLite scans the whole table for the latter.
            rows = await self.db.execute_fetchall(
                "SELECT p.session_id, p.connection_id, p.live, p.creation_time, p.data, "
                "p.created_position, p.destroyed_position, p.reason "
                f"FROM (VALUES {values}) AS k CROSS JOIN projection_connections AS p "
                "ON p.session_id = k.column1 AND p.connection_id = k.column2",
                params,
            )
            for row in rows:
                found[(row[0], row[1])] = ConnectionState(bool(row[2]), *row[3:])
        return found

    async def insert_ledger(self, rows: Sequence[LedgerRow]) -> None:
        await self.db.executemany(_INSERT_LEDGER, rows)

    async def upsert_ledger_sessions(self, rows: Sequence[tuple[str, int, int, int]]) -> None:
        await self.db.executemany(
            "INSERT INTO ledger_sessions (session_id, last_sequence, first_position, last_position) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET "
            "last_sequence = excluded.last_sequence, last_position = excluded.last_position",
            rows,
        )

    async def upsert_connections(self, rows: Sequence[tuple[str, str, ConnectionState]]) -> None:
        await self.db.executemany(
            "INSERT INTO projection_connections (session_id, connection_id, live, creation_time, "
            "data, created_position, destroyed_position, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (session_id, connection_id) DO UPDATE SET live = excluded.live, "
            "creation_time = excluded.creation_time, data = excluded.data, "
            "created_position = excluded.created_position, "
            "destroyed_position = excluded.destroyed_position, reason = excluded.reason",
            [
                (
                    s,
                    c,
                    st.live,
                    st.creation_time,
                    st.data,
                    st.created_position,
                    st.destroyed_position,
                    st.reason,
                )
                for s, c, st in rows
            ],
        )

    async def upsert_session_counts(self, rows: Sequence[tuple[str, int]]) -> None:
        await self.db.executemany(
            "INSERT INTO projection_sessions (session_id, count) VALUES (?, ?) "
            "ON CONFLICT (session_id) DO UPDATE SET count = excluded.count",
            rows,
        )

    async def set_checkpoint(self, name: str, position: int) -> None:
        await self.db.execute(
            "INSERT INTO projection_checkpoints (name, position) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            (name, position),
        )

    async def insert_rejections(self, rows: Sequence[RejectionRow]) -> None:
        await self.db.executemany(
            "INSERT INTO rejected_messages (received_at, source, subject, headers, raw, code, "
            "message, field) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


class SqliteStore(LedgerStore):
    dialect = "sqlite"

    @asynccontextmanager
    async def _driver(self) -> AsyncIterator[Any]:
        """The aiosqlite connection behind a pooled SQLAlchemy connection."""
        async with self.engine.connect() as connection:
            raw = await connection.get_raw_connection()
            yield raw.driver_connection

    @asynccontextmanager
    async def _immediate(self) -> AsyncIterator[Any]:
        async with self._driver() as db:
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    @asynccontextmanager
    async def write(self) -> AsyncIterator[_SqliteUnit]:
        async with self._immediate() as db:
            yield _SqliteUnit(db)

    async def known(self, ids: Sequence[str]) -> dict[str, ExistingEvent]:
        with transient_errors():
            async with self._driver() as db:
                return await _SqliteUnit(db).existing(ids)

    async def rebuild(self) -> int:
        with transient_errors():
            async with self._immediate() as db:
                await db.execute("DELETE FROM projection_connections")
                await db.execute("DELETE FROM projection_sessions")
                await db.execute(REBUILD_CONNECTIONS)
                await db.execute(REBUILD_SESSIONS)
                head = await _SqliteUnit(db).head()
                await _SqliteUnit(db).set_checkpoint(CHECKPOINT, head)
                return head

    async def records(
        self, *, after: int = 0, session_id: str | None = None, limit: int | None = None
    ) -> AsyncGenerator[list[tuple[Any, ...]], None]:
        async with self._driver() as db:

            async def page(last: int, size: int) -> list[tuple[Any, ...]]:
                if session_id is None:
                    sql = (
                        f"SELECT {RECORD_COLUMNS} FROM connection_ledger "
                        "WHERE position > ? ORDER BY position LIMIT ?"
                    )
                    return list(await db.execute_fetchall(sql, (last, size)))
                # Within a session, sequence order is position order; this uses its index.
                sql = (
                    f"SELECT {RECORD_COLUMNS} FROM connection_ledger "
                    "WHERE session_id = ? AND position > ? ORDER BY sequence LIMIT ?"
                )
                return list(await db.execute_fetchall(sql, (session_id, last, size)))

            async for rows in keyset_pages(page, after, limit):
                yield rows

    async def rejected(
        self, *, after: int = 0, limit: int | None = None
    ) -> AsyncGenerator[list[tuple[Any, ...]], None]:
        async with self._driver() as db:

            async def page(last: int, size: int) -> list[tuple[Any, ...]]:
                sql = f"SELECT {REJECTED_COLUMNS} FROM rejected_messages WHERE id > ? ORDER BY id LIMIT ?"
                return list(await db.execute_fetchall(sql, (last, size)))

            async for rows in keyset_pages(page, after, limit):
                yield rows
