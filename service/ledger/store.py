"""The ledger store: one class per database behind one interface.

The append path and the projection fold are written once (`append.py`, `projections/fold.py`);
a store supplies the transaction that holds the writer lock, the fetches and the bulk writes,
each in the fastest form its driver offers. Record reads are keyset-paged by position so that
any amount of history streams in constant memory without holding a transaction open.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, aclosing, contextmanager
from typing import Any

import orjson
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.errors import ConfigurationError, TransientError
from service.ledger.append import WriteUnit, append_batch
from service.ledger.database import SCHEMA_REVISION
from service.ledger.model import Candidate, ExistingEvent, Rejection, Stored
from service.ledger.records import RECORD_COLUMNS

__all__ = [
    "HEAD_SQL",
    "READ_CHUNK",
    "SAVE_POSITION_SQL",
    "LedgerStore",
    "database_setting_errors",
    "now_ms",
    "transient_errors",
]

READ_CHUNK = 5000
# SQLSTATE classes that mean "try again": connection exception, insufficient resources,
# operator intervention (shutdown, cannot connect now), transaction rollback (deadlock).
_TRANSIENT_SQLSTATE_CLASSES = {"08", "53", "57", "40"}


# A named position (the relay's checkpoint) only ever moves forward: a relay that lost its
# lease without knowing yet, or a background write finishing late, may write a position below
# the one its successor wrote, and a checkpoint moved back would have the next relay publish
# again records that left JetStream's duplicate window long ago. The WHERE of the upsert keeps
# the greater of the two (GREATEST(old, new), with no row rewritten when the new one is not
# greater) in SQL that both PostgreSQL and SQLite run. The projection's checkpoint is not written
# through here, and must not be: the append transaction and `rebuild` set it to exactly what the
# projection tables hold, which after a rebuild may be less than before.
def checkpoint_upsert(name: str, position: str, *, forward_only: bool = False) -> str:
    """The one statement that writes a checkpoint, with the placeholders of the driver that
    runs it (`?`, `:name`, `$1`): unconditional for the projection's, whose position the append
    transaction and `rebuild` set exactly; `forward_only` for the others (see below)."""
    sql = (
        f"INSERT INTO projection_checkpoints (name, position) VALUES ({name}, {position}) "
        "ON CONFLICT (name) DO UPDATE SET position = excluded.position"
    )
    return sql + " WHERE excluded.position > projection_checkpoints.position" if forward_only else sql


# The ledger's head: the last position appended, 0 when empty.
HEAD_SQL = "SELECT coalesce(max(position), 0) FROM connection_ledger"

SAVE_POSITION_SQL = checkpoint_upsert(":name", ":position", forward_only=True)
_SAVE_POSITION = text(SAVE_POSITION_SQL)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _is_transient(error: BaseException) -> bool:
    # sa_exc.TimeoutError: no pooled connection came free in time (every one busy); it passes
    # like an outage does, and must not end the service.
    if isinstance(error, (OSError, TimeoutError, ConnectionError, sa_exc.TimeoutError)):
        return True
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        return _is_transient(error.orig) if error.orig is not None else False
    if isinstance(error, sqlite3.OperationalError):
        text = str(error)
        return "locked" in text or "busy" in text or "unable to open" in text or "disk I/O" in text
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES:
        return True
    # asyncpg's InterfaceError / ConnectionDoesNotExistError have no SQLSTATE class of their own.
    return type(error).__name__ in {"ConnectionDoesNotExistError", "InterfaceError"}


def _driver_error(error: BaseException) -> BaseException:
    """The driver's own exception behind SQLAlchemy's wrappers (it has the SQLSTATE)."""
    seen = error
    while getattr(seen, "sqlstate", None) is None and (seen.__cause__ or getattr(seen, "orig", None)):
        seen = seen.__cause__ or seen.orig  # type: ignore[attr-defined]
    return seen


@contextmanager
def database_setting_errors() -> Iterator[None]:
    """Turn "this database refuses who we are, or does not exist" into a ConfigurationError
    that names LEDGER_DATABASE_URL: it will not pass by waiting, and it is the setting's
    fault, not the service's (SQLSTATE classes 28, invalid authorization, and 3D, invalid
    catalog name). Around the schema check at start, 42501 (insufficient privilege) is a role
    that may use the tables but not migrate them, on a schema older than this release's."""
    try:
        yield
    except sa_exc.DBAPIError as error:
        cause = _driver_error(error)
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate[:2] in {"28", "3D"}:
            raise ConfigurationError(
                f"LEDGER_DATABASE_URL: the database refused the connection: {cause}; check the user, "
                "password and database name in it (the database must exist)"
            ) from error
        if sqlstate == "42501":
            raise ConfigurationError(
                f"LEDGER_DATABASE_URL: this role may not migrate the schema to revision {SCHEMA_REVISION} "
                f"({cause}); run `connledger migrate` as the owner of the tables first, then start "
                "the service again"
            ) from error
        raise


@contextmanager
def transient_errors() -> Iterator[None]:
    """Turn "the database is unreachable now" into TransientError; let real bugs through."""
    try:
        yield
    except TransientError:
        raise
    except Exception as error:
        if _is_transient(error):
            raise TransientError(f"the database is unavailable: {type(error).__name__}: {error}") from error
        raise


class LedgerStore(ABC):
    """The ledger on one database. Subclasses: SqliteStore, PostgresStore.

    Two pools: the engine's, for appends and short queries, and the readers', for the reads
    that stream history to clients (`records`, `record_lines`, `rejected`). A streaming read
    takes a connection for one page, hands it back, and only then gives the page to its client:
    a client that reads slowly, or not at all, holds no connection while it waits, and however
    many read at once, an append never waits for a connection behind them."""

    dialect: str
    # The SQL expression that encodes a ledger row as records.record_json does.
    record_json_sql: str
    # Connections that read and encode record ranges at once (see record_lines).
    parallel_readers = 2

    def __init__(self, engine: AsyncEngine, readers: AsyncEngine | None = None) -> None:
        self.engine = engine
        self.readers = readers if readers is not None else engine

    @abstractmethod
    def write(self) -> AbstractAsyncContextManager[WriteUnit]:
        """A transaction holding the writer lock; commits on a clean exit."""

    @abstractmethod
    async def known(self, ids: Sequence[str]) -> dict[str, ExistingEvent]:
        """Events already in the ledger, read without the lock (a hint; append re-checks)."""

    @abstractmethod
    async def rebuild(self) -> int:
        """Drop the projections and rebuild them from the ledger; returns the head position."""

    @abstractmethod
    def _driver_on(self, engine: AsyncEngine) -> AbstractAsyncContextManager[Any]:
        """A connection of the driver (aiosqlite, asyncpg) from `engine`'s pool."""

    def _driver(self) -> AbstractAsyncContextManager[Any]:
        """A driver connection from the engine's pool (appends, short queries)."""
        return self._driver_on(self.engine)

    def _reader(self) -> AbstractAsyncContextManager[Any]:
        """A driver connection from the readers' pool (streamed history)."""
        return self._driver_on(self.readers)

    @abstractmethod
    async def _ledger_page(
        self, db: Any, columns: str, last: int, size: int, session_id: str | None
    ) -> list[tuple[Any, ...]]:
        """Up to `size` ledger rows (`columns`, position first) after position `last`, in
        position order, of one session or all."""

    @abstractmethod
    async def _rejected_page(self, db: Any, last: int, size: int) -> list[tuple[Any, ...]]:
        """Up to `size` rejected messages (records.REJECTED_COLUMNS) after id `last`, in id order."""

    async def _ledger_pages(
        self, columns: str, after: int, session_id: str | None, limit: int | None
    ) -> AsyncGenerator[list[tuple[Any, ...]], None]:
        """`columns` (position first) of ledger rows in position order, keyset-paged; each page
        on a reader connection taken for that page alone."""

        async def page(last: int, size: int) -> list[tuple[Any, ...]]:
            async with self._reader() as db:
                return await self._ledger_page(db, columns, last, size, session_id)

        with transient_errors():
            async for rows in keyset_pages(page, after, limit):
                yield rows

    async def records(
        self, *, after: int = 0, session_id: str | None = None, limit: int | None = None
    ) -> AsyncGenerator[list[tuple[Any, ...]], None]:
        """Ledger records (records.RECORD_COLUMNS) in position order, in chunks."""
        async with aclosing(self._ledger_pages(RECORD_COLUMNS, after, session_id, limit)) as pages:
            async for rows in pages:
                yield rows

    async def relay_records(self, *, after: int, limit: int) -> AsyncGenerator[list[tuple[Any, ...]], None]:
        """(position, event id, session id, type, record JSON) of the records after `after`, in
        position order, in chunks: what the relay publishes, the JSON encoded by the database
        (see records.py) rather than built in Python from the row."""
        columns = f"position, event_id, session_id, type, {self.record_json_sql}"
        async with aclosing(self._ledger_pages(columns, after, None, limit)) as pages:
            async for rows in pages:
                yield rows

    async def rejected(
        self, *, after: int = 0, limit: int | None = None
    ) -> AsyncGenerator[list[tuple[Any, ...]], None]:
        """Rejected messages (records.REJECTED_COLUMNS) in id order, in chunks."""

        async def page(last: int, size: int) -> list[tuple[Any, ...]]:
            async with self._reader() as db:
                return await self._rejected_page(db, last, size)

        with transient_errors():
            async for rows in keyset_pages(page, after, limit):
                yield rows

    @abstractmethod
    async def _line_range(self, db: Any, low: int, high: int) -> bytes:
        """NDJSON of the records at positions low+1 .. high (see record_lines), on `db`."""

    def _line_pages(
        self, after: int, session_id: str | None, limit: int | None
    ) -> AsyncGenerator[list[tuple[Any, ...]], None]:
        """(position, record JSON) of records after `after`, keyset-paged (see records)."""
        return self._ledger_pages(f"position, {self.record_json_sql}", after, session_id, limit)

    async def record_lines(
        self, *, after: int = 0, session_id: str | None = None, limit: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """The same records as `records`, as NDJSON encoded by the database (see records.py):
        `records.record_json` of each, one a line, in chunks of whole lines.

        Positions are dense (from 1, no gap), so up to the head at the start the records are
        read as ranges of positions, which `parallel_readers` connections can read at once: the
        encoding, most of the work, then runs in several database processes. Records appended
        since, and a session's records, are read a page at a time after the last one sent."""
        if session_id is None:
            with transient_errors():
                head = await self._read_head()
            end = head if limit is None else min(head, after + limit)
            if end > after:
                async with aclosing(self._dense_lines(after, end)) as chunks:
                    async for chunk in chunks:
                        yield chunk
                if limit is not None:
                    limit -= end - after  # dense: exactly one record per position
                    if limit <= 0:
                        return
                after = end
        async with aclosing(self._line_pages(after, session_id, limit)) as pages:
            async for rows in pages:
                yield "\n".join([row[1] for row in rows]).encode() + b"\n"

    async def _read_head(self) -> int:
        async with self._reader() as db:
            return await self._head_on(db)

    @abstractmethod
    async def _head_on(self, db: Any) -> int:
        """The ledger's head position, read on `db`."""

    async def _read_line_range(self, low: int, high: int) -> bytes:
        async with self._reader() as db:
            return await self._line_range(db, low, high)

    async def _dense_lines(self, after: int, end: int) -> AsyncGenerator[bytes, None]:
        """NDJSON of positions after+1 .. end, READ_CHUNK at a time, up to `parallel_readers`
        ranges read at once, and yielded in order. Each range takes a reader connection while
        it is read and returns it before its lines are handed over."""
        pending: deque[asyncio.Future[bytes]] = deque()
        low = after
        try:
            with transient_errors():
                while low < end or pending:
                    # A range is asked for only after one before it was taken: at most
                    # `parallel_readers` ranges are held for a client that does not read.
                    while low < end and len(pending) < self.parallel_readers:
                        high = min(low + READ_CHUNK, end)
                        pending.append(asyncio.ensure_future(self._read_line_range(low, high)))
                        low = high
                    chunk = await pending.popleft()
                    yield chunk
        finally:
            for future in pending:
                future.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def claim_hooks(self, ids: Sequence[str], owner: str, timeout_ms: int) -> set[str]:
        """Claim the right to run the hooks of the events `ids` for `owner`, committed at once:
        those nobody has claimed, those `owner` has claimed already (taken again, and its claim
        renewed), and those whose claim is older than `timeout_ms` (a process that died holding
        it). Times are the database's clock, one for every process. Returns the ids now
        claimed by `owner`. Rows are claimed in id order, so that two claimants of overlapping
        sets cannot deadlock."""
        unique = list(dict.fromkeys(ids))  # one row per id: an upsert may touch a row once
        if not unique:
            return set()
        with transient_errors():
            return await self._claim(orjson.dumps(unique).decode(), owner, timeout_ms)

    async def release_hooks(self, ids: Sequence[str], owner: str) -> None:
        """Let go of `owner`'s claims on `ids` (their events are in the ledger now)."""
        if not ids:
            return
        with transient_errors():
            await self._release(orjson.dumps(list(ids)).decode(), owner)

    @abstractmethod
    async def _claim(self, ids_json: str, owner: str, timeout_ms: int) -> set[str]:
        """claim_hooks' one statement, in a transaction of its own, on ids as a JSON array."""

    @abstractmethod
    async def _release(self, ids_json: str, owner: str) -> None:
        """release_hooks' one statement, in a transaction of its own."""

    async def event_id_at(self, position: int) -> str | None:
        """The id of the event at `position`, or None when the ledger has no such position."""
        with transient_errors():
            async with self.readers.connect() as connection:
                found = await connection.scalar(
                    text("SELECT event_id FROM connection_ledger WHERE position = :position"),
                    {"position": position},
                )
        return None if found is None else str(found)

    async def append(
        self, candidates: Sequence[Candidate], rejections: Sequence[Rejection] = ()
    ) -> tuple[list[Stored], int]:
        """Append a batch in one transaction; see append.append_batch."""
        with transient_errors():
            async with self.write() as unit:
                return await append_batch(unit, candidates, rejections, now_ms())

    async def save_position(self, name: str, position: int) -> None:
        """Write a named position (the relay's progress) in a short transaction of its own,
        unless the one stored is already further (see SAVE_POSITION_SQL). It takes no writer
        lock: it touches no ledger row, and no append reads it."""
        with transient_errors():
            async with self.engine.begin() as connection:
                await connection.execute(_SAVE_POSITION, {"name": name, "position": position})

    async def dispose(self) -> None:
        await self.engine.dispose()


async def keyset_pages(
    fetch_page: Any, after: int, limit: int | None
) -> AsyncGenerator[list[tuple[Any, ...]], None]:
    """Page through rows whose first column is a strictly increasing key, READ_CHUNK at a time.

    `fetch_page(last_key, n)` returns up to n rows with keys above last_key, in key order.
    Each page is its own short query, so no transaction stays open while a slow client reads.
    """
    remaining = limit
    last = after
    while remaining is None or remaining > 0:
        size = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
        rows: list[tuple[Any, ...]] = await fetch_page(last, size)
        if not rows:
            return
        yield rows
        last = rows[-1][0]
        if remaining is not None:
            remaining -= len(rows)
        if len(rows) < size:
            return
