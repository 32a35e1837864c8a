"""The ledger on SQLite (the embedded default).

SQLite has one writer at a time, and BEGIN IMMEDIATE takes the write lock when the transaction
starts. That lock is the writer lock of the append path: positions are read and assigned while
it is held, so they are gap-free and commit in order without anything more.

Calls go to aiosqlite's connection directly (one thread hop per statement) rather than through
SQLAlchemy's result machinery, which would cost more than the insert itself on this path.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from itertools import chain
from typing import Any, TypeVar

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from service.driver_internals import on_sqlite_thread
from service.ledger.append import (
    CHECKPOINT,
    BatchState,
    BatchWrites,
    ConnectionKey,
    LedgerRow,
    RejectionRow,
)
from service.ledger.model import ExistingEvent
from service.ledger.records import REJECTED_COLUMNS, SQLITE_RECORD_JSON
from service.ledger.schema import LEDGER_COLUMNS
from service.ledger.store import (
    HEAD_SQL,
    SAVE_POSITION_SQL,
    LedgerStore,
    checkpoint_upsert,
    transient_errors,
)
from service.projections.fold import ConnectionState
from service.projections.rebuild import REBUILD_CONNECTIONS_SQLITE, REBUILD_SESSIONS

__all__ = ["SqliteStore"]

T = TypeVar("T")

# The page cache of a connection while it appends (64 MiB).
WRITER_CACHE_KIB = 64 * 1024
# (session, connection) pairs per lookup statement (a power of 8; two parameters each).
_KEY_PAIRS_PER_LOOKUP = 4096
# Keys given as one JSON array: one statement whatever their number, compiled once.
_EXISTING = (
    "SELECT event_id, position, type, session_id, event_time, connection_id, creation_time, "
    "data, reason, project_id, source_format, vendor_reason, origin FROM connection_ledger "
    "WHERE event_id IN (SELECT value FROM json_each(?))"
)
# Rows that come back by the thousand are aggregated into one JSON text by SQLite (see
# `_SqliteUnit`): one Python object to build instead of thousands of tuples.
_SESSION_STATES = (
    "SELECT json_group_array(json_array(s.session_id, s.last_sequence, coalesce(p.count, 0))) "
    "FROM ledger_sessions s LEFT JOIN projection_sessions p ON p.session_id = s.session_id "
    "WHERE s.session_id IN (SELECT value FROM json_each(?))"
)
# A join, not `(a, b) IN (VALUES ...)`: SQLite scans the whole table for the latter. (Pairs
# from a JSON array, `k.value ->> 0`, take twice as long as a VALUES list.)
_CONNECTION_STATES = (
    "SELECT json_group_array(json_array(p.session_id, p.connection_id, p.live, p.creation_time, "
    "p.data, p.created_position, p.destroyed_position, p.reason, p.created_event_time, "
    "p.destroyed_event_time)) "
    "FROM (VALUES {}) AS k CROSS JOIN projection_connections AS p "
    "ON p.session_id = k.column1 AND p.connection_id = k.column2"
)
# Claims on running an event's hooks (pipeline/batches.py): a new claim, or one taken over from a
# claimant that has held it since before the staleness bound. `WHERE true` tells SQLite's
# parser that ON CONFLICT belongs to the INSERT, not to the SELECT's join.
_CLAIM_HOOKS = (
    "INSERT INTO hook_claims (event_id, owner, claimed_at) "
    "SELECT value, ?2, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) "
    "FROM json_each(?1) WHERE true ORDER BY value "
    "ON CONFLICT (event_id) DO UPDATE SET owner = excluded.owner, claimed_at = excluded.claimed_at "
    "WHERE hook_claims.claimed_at < excluded.claimed_at - ?3 OR hook_claims.owner = excluded.owner "
    "RETURNING event_id"
)
_RELEASE_HOOKS = "DELETE FROM hook_claims WHERE event_id IN (SELECT value FROM json_each(?1)) AND owner = ?2"
_INSERT_LEDGER = f"INSERT INTO connection_ledger ({', '.join(LEDGER_COLUMNS)}) VALUES {{}}"
_UPSERT_LEDGER_SESSIONS = (
    "INSERT INTO ledger_sessions (session_id, last_sequence, first_position, last_position) "
    "VALUES {} ON CONFLICT (session_id) DO UPDATE SET "
    "last_sequence = excluded.last_sequence, last_position = excluded.last_position"
)
_INSERT_CONNECTIONS = (
    "INSERT INTO projection_connections (session_id, connection_id, live, creation_time, "
    "data, created_position, destroyed_position, reason, created_event_time, destroyed_event_time) "
    "VALUES {}"
)
# SQLite has no bulk UPDATE from a list of rows faster than this upsert of rows that exist.
_UPDATE_CONNECTIONS = (
    "INSERT INTO projection_connections (session_id, connection_id, live, creation_time, "
    "data, created_position, destroyed_position, reason, created_event_time, destroyed_event_time) "
    "VALUES {} ON CONFLICT (session_id, connection_id) DO UPDATE SET live = excluded.live, "
    "creation_time = excluded.creation_time, data = excluded.data, "
    "created_position = excluded.created_position, "
    "destroyed_position = excluded.destroyed_position, reason = excluded.reason, "
    "created_event_time = excluded.created_event_time, "
    "destroyed_event_time = excluded.destroyed_event_time"
)
_UPSERT_SESSION_COUNTS = (
    "INSERT INTO projection_sessions (session_id, count) VALUES {} "
    "ON CONFLICT (session_id) DO UPDATE SET count = excluded.count"
)
# A range of records as one text of lines: SQLite builds it in one step, with the GIL released,
# instead of handing Python a row (and a tuple, and a string) per record; 1.5x the records a
# second. The subquery's order is kept: an aggregate over a subquery with ORDER BY is not
# flattened, and the subquery feeds its rows in that order.
_LINE_RANGE = (
    f"SELECT group_concat(line, char(10)) FROM (SELECT {SQLITE_RECORD_JSON} AS line "
    "FROM connection_ledger WHERE position > ? AND position <= ? ORDER BY position)"
)
# Bound parameters per multi-row statement (see `_SqliteUnit`): several hundred rows, a few
# milliseconds of SQLite's work per trip back to Python; under SQLite's limit of 32766.
_PARAMETERS_PER_STATEMENT = 16_000


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _groups(items: Sequence[Any], largest: int) -> list[tuple[int, list[Sequence[Any]]]]:
    """`items` cut into slices of `largest` rows, then of largest/8, largest/64, ... down to 1
    (`largest` a power of 8), grouped by length: [(length, slices), ...].

    A statement is written for the length of its slices, and compiling one of a few hundred
    rows costs SQLite four times as much as running it. With these lengths a few statements
    per table cover every batch size and stay in the sqlite3 module's statement cache, and a
    batch takes at most one `executemany` per length."""
    groups: list[tuple[int, list[Sequence[Any]]]] = []
    start, size = 0, largest
    while start < len(items):
        count = (len(items) - start) // size
        if count:
            groups.append((size, [items[start + i * size : start + (i + 1) * size] for i in range(count)]))
            start += count * size
        size //= 8
    return groups


def _power_of_8_at_most(n: int) -> int:
    size = 1
    while size * 8 <= n:
        size *= 8
    return size


def _flat(rows: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    return tuple(chain.from_iterable(rows))


def _values(rows: int, columns: int) -> str:
    """`(?,?),(?,?),...`: the VALUES list of a multi-row statement."""
    return ",".join([f"({_marks(columns)})"] * rows)


def _on_thread(db: Any, work: Callable[[sqlite3.Connection], T]) -> Awaitable[T]:
    """Run `work` with the sqlite3 connection, on aiosqlite's thread, as one call.

    Every call to aiosqlite is a hop to its thread and back, and each hop needs the GIL twice:
    while the event loop's thread decodes the next batch, that is a wait of up to the switch
    interval each time. An append made of separate calls took some thirty hops, which cost more
    than its statements; a step of several statements as one call costs one. aiosqlite has no
    public way to run a callable on its thread (see service/driver_internals.py); every test
    that appends goes through here."""
    return on_sqlite_thread(db, work)


def _write_rows(conn: sqlite3.Connection, template: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Run `template` (with `{}` for its VALUES list) on all `rows`, in multi-row statements."""
    if not rows:
        return
    columns = len(rows[0])
    for length, slices in _groups(rows, _power_of_8_at_most(_PARAMETERS_PER_STATEMENT // columns)):
        conn.executemany(template.format(_values(length, columns)), map(_flat, slices))


def _json_rows(conn: sqlite3.Connection, sql: str, parameters: Sequence[Any]) -> list[list[Any]]:
    found: list[list[Any]] = orjson.loads(conn.execute(sql, parameters).fetchone()[0])
    return found


def _head(conn: sqlite3.Connection) -> int:
    return int(conn.execute(HEAD_SQL).fetchone()[0])


def _existing(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, ExistingEvent]:
    rows = conn.execute(_EXISTING, (orjson.dumps(list(ids)).decode(),)).fetchall()
    return {row[0]: ExistingEvent(row[1], tuple(row[2:])) for row in rows}


def _read_state(
    conn: sqlite3.Connection, ids: Sequence[str], session_ids: Sequence[str], keys: Sequence[ConnectionKey]
) -> BatchState:
    head = _head(conn)
    stored = _existing(conn, ids)
    rows = _json_rows(conn, _SESSION_STATES, (orjson.dumps(list(session_ids)).decode(),))
    sessions = {session_id: (last_sequence, count) for session_id, last_sequence, count in rows}
    found: dict[ConnectionKey, ConnectionState] = {}
    for length, slices in _groups(keys, _KEY_PAIRS_PER_LOOKUP):
        sql = _CONNECTION_STATES.format(_values(length, 2))
        for chunk in slices:
            for row in _json_rows(conn, sql, _flat(chunk)):
                found[(row[0], row[1])] = ConnectionState(bool(row[2]), *row[3:])
    return BatchState(head, stored, sessions, found)


def _write(conn: sqlite3.Connection, writes: BatchWrites) -> None:
    _write_rows(conn, _INSERT_LEDGER, writes.ledger)
    _write_rows(conn, _UPSERT_LEDGER_SESSIONS, writes.ledger_sessions)
    _write_rows(conn, _INSERT_CONNECTIONS, writes.new_connections)
    _write_rows(conn, _UPDATE_CONNECTIONS, writes.changed_connections)
    _write_rows(conn, _UPSERT_SESSION_COUNTS, writes.counts)
    _set_checkpoint(conn, CHECKPOINT, writes.checkpoint)


_SET_CHECKPOINT = checkpoint_upsert("?", "?")


def _set_checkpoint(conn: sqlite3.Connection, name: str, position: int) -> None:
    conn.execute(_SET_CHECKPOINT, (name, position))


class _SqliteUnit:
    """The statements of one append, run on aiosqlite's thread, a step at a time (`_on_thread`).

    That thread runs SQLite with the GIL released, in parallel with the importer decoding the
    next batch on the main thread, but it needs the GIL back each time SQLite returns to
    Python: after every row of an `executemany`, and for every row it fetches. While the main
    thread is busy, each of those waits for the interpreter's switch interval, so a statement
    per row would crawl. Writes therefore go as multi-row INSERTs of hundreds of rows each, and
    lookups that return thousands of rows come back as one JSON array.
    """

    def __init__(self, db: Any) -> None:
        self.db = db

    async def head(self) -> int:
        return await _on_thread(self.db, _head)

    async def existing(self, ids: Sequence[str]) -> dict[str, ExistingEvent]:
        return await _on_thread(self.db, lambda conn: _existing(conn, ids))

    async def read_state(
        self, ids: Sequence[str], session_ids: Sequence[str], keys: Sequence[ConnectionKey]
    ) -> BatchState:
        return await _on_thread(self.db, lambda conn: _read_state(conn, ids, session_ids, keys))

    async def insert_ledger(self, rows: Sequence[LedgerRow]) -> None:
        await _on_thread(self.db, lambda conn: _write_rows(conn, _INSERT_LEDGER, rows))

    async def write(self, writes: BatchWrites) -> None:
        await _on_thread(self.db, lambda conn: _write(conn, writes))

    async def set_checkpoint(self, name: str, position: int) -> None:
        await _on_thread(self.db, lambda conn: _set_checkpoint(conn, name, position))

    async def insert_rejections(self, rows: Sequence[RejectionRow]) -> None:
        await _on_thread(
            self.db,
            lambda conn: conn.executemany(
                "INSERT INTO rejected_messages (received_at, source, subject, headers, raw, code, "
                "message, field, message_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (message_key) DO NOTHING",
                rows,
            ),
        )


class SqliteStore(LedgerStore):
    dialect = "sqlite"
    record_json_sql = SQLITE_RECORD_JSON
    # The sqlite3 module builds every fetched row holding the GIL: two reader threads hand it
    # back and forth for each row (a context switch per row: slower than one thread).
    parallel_readers = 1

    @asynccontextmanager
    async def _driver_on(self, engine: AsyncEngine) -> AsyncIterator[Any]:
        """The aiosqlite connection behind a pooled SQLAlchemy connection."""
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            yield raw.driver_connection

    def __init__(self, engine: AsyncEngine, readers: AsyncEngine | None = None) -> None:
        super().__init__(engine, readers)
        # SQLite's own lock arbitrates between processes by retrying after sleeps of up to
        # 100 ms (the busy handler). Within this process, writers (ingest, the relay's
        # checkpoint, rebuild) queue here instead and start the moment the previous one commits.
        self._writers = asyncio.Lock()

    @asynccontextmanager
    async def _immediate(self, *setup: str) -> AsyncIterator[Any]:
        """A write transaction, begun with the write lock taken, and `setup` run in it."""

        def begin(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            for statement in setup:
                conn.execute(statement)

        async with self._writers, self._driver() as db:
            await _on_thread(db, begin)
            try:
                yield db
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    async def _claim(self, ids_json: str, owner: str, timeout_ms: int) -> set[str]:
        async with self._immediate() as db:
            rows = await db.execute_fetchall(_CLAIM_HOOKS, (ids_json, owner, timeout_ms))
        return {row[0] for row in rows}

    async def _release(self, ids_json: str, owner: str) -> None:
        async with self._immediate() as db:
            await db.execute(_RELEASE_HOOKS, (ids_json, owner))

    async def save_position(self, name: str, position: int) -> None:
        with transient_errors():
            async with self._immediate() as db:
                # Not `set_checkpoint`, which writes the projection's checkpoint as it is: this
                # one only moves forward (see SAVE_POSITION_SQL).
                values = {"name": name, "position": position}
                await _on_thread(db, lambda conn: conn.execute(SAVE_POSITION_SQL, values))

    @asynccontextmanager
    async def write(self) -> AsyncIterator[_SqliteUnit]:
        # A writer's inserts land all over the indexes (event ids, sessions, connections); with
        # SQLite's default 2 MB page cache most of them miss and read the page again. Set per
        # write, so that connections that only read keep the small default.
        async with self._immediate(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}") as db:
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
                await db.execute(REBUILD_CONNECTIONS_SQLITE)
                await db.execute(REBUILD_SESSIONS)
                head = await _SqliteUnit(db).head()
                await _SqliteUnit(db).set_checkpoint(CHECKPOINT, head)
                return head

    async def _ledger_page(
        self, db: Any, columns: str, last: int, size: int, session_id: str | None
    ) -> list[tuple[Any, ...]]:
        if session_id is None:
            sql = f"SELECT {columns} FROM connection_ledger WHERE position > ? ORDER BY position LIMIT ?"
            return list(await db.execute_fetchall(sql, (last, size)))
        # Within a session, sequence order is position order; this uses its index.
        sql = (
            f"SELECT {columns} FROM connection_ledger "
            "WHERE session_id = ? AND position > ? ORDER BY sequence LIMIT ?"
        )
        return list(await db.execute_fetchall(sql, (session_id, last, size)))

    async def _line_range(self, db: Any, low: int, high: int) -> bytes:
        rows = await db.execute_fetchall(_LINE_RANGE, (low, high))
        lines: str | None = rows[0][0]
        return b"" if lines is None else lines.encode() + b"\n"

    async def _head_on(self, db: Any) -> int:
        return await _SqliteUnit(db).head()

    async def _rejected_page(self, db: Any, last: int, size: int) -> list[tuple[Any, ...]]:
        sql = f"SELECT {REJECTED_COLUMNS} FROM rejected_messages WHERE id > ? ORDER BY id LIMIT ?"
        return list(await db.execute_fetchall(sql, (last, size)))
