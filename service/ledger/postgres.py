"""The ledger on PostgreSQL.

Why the append transaction takes a lock
---------------------------------------
A reader that tails the ledger by position (the relay, SSE streams, `replay --after`) must never
see position N+1 committed while N is still to come, or it would move past N and skip it for
good. A database sequence does not give that: numbers are handed out in insert order, but
concurrent transactions commit in any order, so a late commit lands *behind* a reader.

So every append transaction starts with `pg_advisory_xact_lock(LEDGER_LOCK)`. Only one append
(from any process or host) is then between "read the head" and "commit" at a time, and it
assigns positions head+1.. itself. The lock is released only after the commit is visible, and
the next holder reads the head in a *new statement*, hence a new READ COMMITTED snapshot that
includes that commit. Positions are therefore gap-free (nothing is handed out by a transaction
that may roll back) and committed in order. The lock is taken once per batch of hundreds of
events, so its cost is shared; readers never take it. An advisory lock rather than LOCK TABLE
keeps plain SELECTs and the immutability of the table out of the question, and lets a service
role with only SELECT and INSERT on the ledger append.

Bulk paths: COPY for the ledger rows and for new projection rows, and single statements over
unnest()ed arrays for the lookups, the updates and the per-session upserts, so a batch costs a
handful of round trips whatever its size. Reading the ledger for `replay`, the server encodes
the records (records.POSTGRES_RECORD_JSON), on two connections at once (store.record_lines).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from service.ledger.append import CHECKPOINT, ConnectionKey, ConnectionRow, LedgerRow, RejectionRow
from service.ledger.model import ExistingEvent
from service.ledger.records import POSTGRES_RECORD_JSON, REJECTED_COLUMNS
from service.ledger.schema import LEDGER_COLUMNS
from service.ledger.store import LedgerStore, keyset_pages, transient_errors
from service.projections.fold import ConnectionState
from service.projections.rebuild import REBUILD_CONNECTIONS_POSTGRES, REBUILD_SESSIONS

__all__ = ["LEDGER_LOCK", "PostgresStore"]

# An arbitrary constant naming the ledger's writer lock ("LEDG" in ASCII).
LEDGER_LOCK = 0x4C454447
_CONNECTION_COLUMNS = (
    "session_id",
    "connection_id",
    "live",
    "creation_time",
    "data",
    "created_position",
    "destroyed_position",
    "reason",
)
# Planner settings of an append transaction (see PostgresStore.write).
_KEYED_PLANS_ONLY = (
    "SELECT set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true), "
    "set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)"
)
# Up to this many keys the planner chooses index probes by itself.
_PLANNED_BY_ITSELF = 1000
_LINE_RANGE = (
    f"SELECT {POSTGRES_RECORD_JSON} FROM connection_ledger "
    "WHERE position > $1 AND position <= $2 ORDER BY position"
)
# work_mem of the rebuild transaction (see PostgresStore.rebuild).
REBUILD_WORK_MEM = "256MB"


class _PostgresUnit:
    def __init__(self, pg: Any) -> None:
        self.pg = pg

    async def head(self) -> int:
        return int(await self.pg.fetchval("SELECT coalesce(max(position), 0) FROM connection_ledger"))

    async def existing(self, ids: Sequence[str]) -> dict[str, ExistingEvent]:
        rows = await self.pg.fetch(
            "SELECT event_id, position, type, session_id, event_time, connection_id, "
            "creation_time, data, reason, project_id FROM connection_ledger "
            "WHERE event_id = ANY($1::text[])",
            list(ids),
        )
        return {row[0]: ExistingEvent(row[1], tuple(row[2:])) for row in rows}

    async def session_state(self, session_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        rows = await self.pg.fetch(
            "SELECT s.session_id, s.last_sequence, coalesce(p.count, 0) "
            "FROM ledger_sessions s LEFT JOIN projection_sessions p ON p.session_id = s.session_id "
            "WHERE s.session_id = ANY($1::text[])",
            list(session_ids),
        )
        return {row[0]: (row[1], row[2]) for row in rows}

    async def connection_states(self, keys: Sequence[ConnectionKey]) -> dict[ConnectionKey, ConnectionState]:
        if not keys:
            return {}
        sessions, connections = zip(*keys, strict=True)
        rows = await self.pg.fetch(
            "SELECT c.session_id, c.connection_id, c.live, c.creation_time, c.data, "
            "c.created_position, c.destroyed_position, c.reason "
            "FROM projection_connections c "
            "JOIN unnest($1::text[], $2::text[]) AS k(s, c) "
            "ON c.session_id = k.s AND c.connection_id = k.c",
            list(sessions),
            list(connections),
        )
        return {(row[0], row[1]): ConnectionState(*row[2:]) for row in rows}

    async def insert_ledger(self, rows: Sequence[LedgerRow]) -> None:
        await self.pg.copy_records_to_table("connection_ledger", records=rows, columns=LEDGER_COLUMNS)

    async def upsert_ledger_sessions(self, rows: Sequence[tuple[str, int, int, int]]) -> None:
        await self.pg.execute(
            "INSERT INTO ledger_sessions (session_id, last_sequence, first_position, last_position) "
            "SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) "
            "ON CONFLICT (session_id) DO UPDATE SET "
            "last_sequence = excluded.last_sequence, last_position = excluded.last_position",
            *(list(column) for column in zip(*rows, strict=True)),
        )

    async def insert_connections(self, rows: Sequence[ConnectionRow]) -> None:
        if rows:
            await self.pg.copy_records_to_table(
                "projection_connections", records=rows, columns=_CONNECTION_COLUMNS
            )

    async def update_connections(self, rows: Sequence[ConnectionRow]) -> None:
        if not rows:
            return
        await self.pg.execute(
            "UPDATE projection_connections AS p SET live = k.live, creation_time = k.creation_time, "
            "data = k.data, created_position = k.created_position, "
            "destroyed_position = k.destroyed_position, reason = k.reason "
            "FROM unnest($1::text[], $2::text[], $3::bool[], $4::bigint[], $5::text[], "
            "$6::bigint[], $7::bigint[], $8::text[]) "
            "AS k(session_id, connection_id, live, creation_time, data, created_position, "
            "destroyed_position, reason) "
            "WHERE p.session_id = k.session_id AND p.connection_id = k.connection_id",
            *(list(column) for column in zip(*rows, strict=True)),
        )

    async def upsert_session_counts(self, rows: Sequence[tuple[str, int]]) -> None:
        await self.pg.execute(
            "INSERT INTO projection_sessions (session_id, count) "
            "SELECT * FROM unnest($1::text[], $2::bigint[]) "
            "ON CONFLICT (session_id) DO UPDATE SET count = excluded.count",
            *(list(column) for column in zip(*rows, strict=True)),
        )

    async def set_checkpoint(self, name: str, position: int) -> None:
        await self.pg.execute(
            "INSERT INTO projection_checkpoints (name, position) VALUES ($1, $2) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            name,
            position,
        )

    async def insert_rejections(self, rows: Sequence[RejectionRow]) -> None:
        await self.pg.executemany(
            "INSERT INTO rejected_messages (received_at, source, subject, headers, raw, code, "
            "message, field) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            rows,
        )


class PostgresStore(LedgerStore):
    dialect = "postgresql"
    record_json_sql = POSTGRES_RECORD_JSON

    @asynccontextmanager
    async def _driver(self) -> AsyncIterator[Any]:
        """The asyncpg connection behind a pooled SQLAlchemy connection. Only the driver is
        used on it, so SQLAlchemy's own transaction bookkeeping stays idle."""
        async with self.engine.connect() as connection:
            raw = await connection.get_raw_connection()
            yield raw.driver_connection

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[Any]:
        async with self._driver() as pg, pg.transaction():
            # See the module docstring: this lock is what keeps positions in commit order.
            await pg.execute("SELECT pg_advisory_xact_lock($1)", LEDGER_LOCK)
            yield pg

    @asynccontextmanager
    async def write(self) -> AsyncIterator[_PostgresUnit]:
        async with self._locked() as pg:
            # Every statement of an append reads or writes a batch's rows by key. Left to its
            # statistics (always behind during an import, when the tables grow by the second),
            # the planner often prefers to scan a whole table into a hash table instead: fine
            # at a million rows, but the cost then grows with the ledger rather than with the
            # batch. For this transaction only, plans are index probes.
            await pg.execute(_KEYED_PLANS_ONLY)
            yield _PostgresUnit(pg)

    async def known(self, ids: Sequence[str]) -> dict[str, ExistingEvent]:
        with transient_errors():
            async with self._driver() as pg:
                if len(ids) <= _PLANNED_BY_ITSELF:
                    return await _PostgresUnit(pg).existing(ids)
                # An import's batch of tens of thousands of ids: index probes, as in `write`
                # (the settings need a transaction: two more round trips, for a large batch).
                async with pg.transaction():
                    await pg.execute(_KEYED_PLANS_ONLY)
                    return await _PostgresUnit(pg).existing(ids)

    async def rebuild(self) -> int:
        with transient_errors():
            async with self._locked() as pg:
                # TRUNCATE, unlike DELETE, leaves no dead rows behind for a million tombstones.
                await pg.execute("TRUNCATE projection_connections, projection_sessions")
                # The grouping holds a row per connection in a hash table: with the default
                # 4 MB it spills to disk in batches and takes twice as long. For this
                # transaction only; the server's memory, not this process's.
                await pg.execute(f"SET LOCAL work_mem = '{REBUILD_WORK_MEM}'")
                await pg.execute(REBUILD_CONNECTIONS_POSTGRES)
                await pg.execute(REBUILD_SESSIONS)
                unit = _PostgresUnit(pg)
                head = await unit.head()
                await unit.set_checkpoint(CHECKPOINT, head)
                return head

    async def _ledger_pages(
        self, columns: str, after: int, session_id: str | None, limit: int | None
    ) -> AsyncGenerator[list[Any], None]:
        """`columns` (position first) of ledger rows in position order, a page at a time."""
        async with self._driver() as pg:

            async def page(last: int, size: int) -> list[Any]:
                if session_id is None:
                    return list(
                        await pg.fetch(
                            f"SELECT {columns} FROM connection_ledger "
                            "WHERE position > $1 ORDER BY position LIMIT $2",
                            last,
                            size,
                        )
                    )
                # Within a session, sequence order is position order; this uses its index.
                return list(
                    await pg.fetch(
                        f"SELECT {columns} FROM connection_ledger "
                        "WHERE session_id = $1 AND position > $2 ORDER BY sequence LIMIT $3",
                        session_id,
                        last,
                        size,
                    )
                )

            async for rows in keyset_pages(page, after, limit):
                yield rows

    async def _line_range(self, pg: Any, low: int, high: int) -> bytes:
        rows = await pg.fetch(_LINE_RANGE, low, high)
        return "\n".join([row[0] for row in rows]).encode() + b"\n"

    async def _head_on(self, pg: Any) -> int:
        return await _PostgresUnit(pg).head()

    async def rejected(
        self, *, after: int = 0, limit: int | None = None
    ) -> AsyncGenerator[list[tuple[Any, ...]], None]:
        async with self._driver() as pg:

            async def page(last: int, size: int) -> list[tuple[Any, ...]]:
                return list(
                    await pg.fetch(
                        f"SELECT {REJECTED_COLUMNS} FROM rejected_messages "
                        "WHERE id > $1 ORDER BY id LIMIT $2",
                        last,
                        size,
                    )
                )

            async for rows in keyset_pages(page, after, limit):
                yield rows
