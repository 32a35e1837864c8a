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
that may roll back) and committed in order.

The transaction says READ COMMITTED itself (`BEGIN ISOLATION LEVEL READ COMMITTED`) rather than
trusting the database's default: under REPEATABLE READ (`default_transaction_isolation`, set on
the database or the role) its one snapshot is taken by the statement that waits for the lock,
*before* the lock is granted, so the head it then reads misses the commit it waited for: the
append reused that commit's positions and failed, on the ledger's primary key (which stopped
ingest) or as a serialization failure. `rebuild` likewise rebuilt the projections from a
ledger without the appends committed while it waited. The lock is taken once per batch of hundreds of
events, so its cost is shared; readers never take it. An advisory lock rather than LOCK TABLE
keeps plain SELECTs and the immutability of the table out of the question, and lets a service
role with only SELECT and INSERT on the ledger append.

Round trips: an append is four whatever its size (five when its pooled connection had been idle
and is checked first, pool_liveness.py). BEGIN with the lock and the planner settings (one
simple-protocol query); one statement reading everything the fold needs; one statement writing
everything it produced (data-modifying CTEs, one per table, over rows sent as JSON); COMMIT. A
batch's ledger rows and new connections, above a couple of hundred, go by COPY instead, which
the server takes fastest; the ledger rows of a batch larger than one fold chunk, a chunk at a
time while the fold goes on. Fewer round trips matter most to a light load's latency (batches
of a few dozen): bench/ingest_nats.py's latency phase measures it.

Reading the ledger for `replay`, the server encodes the records (records.POSTGRES_RECORD_JSON)
and joins each range of them into one text, on two connections at once (store.record_lines).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from service.ledger.append import (
    CHECKPOINT,
    BatchState,
    BatchWrites,
    ConnectionKey,
    LedgerRow,
    RejectionRow,
)
from service.ledger.model import ExistingEvent
from service.ledger.records import POSTGRES_RECORD_JSON, REJECTED_COLUMNS
from service.ledger.schema import LEDGER_COLUMNS
from service.ledger.store import HEAD_SQL, LedgerStore, checkpoint_upsert, transient_errors
from service.projections.fold import ConnectionState
from service.projections.rebuild import (
    REBUILD_CONNECTIONS_POSTGRES,
    REBUILD_CONNECTIONS_POSTGRES_SORTED,
    REBUILD_SESSIONS,
)

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
    "created_event_time",
    "destroyed_event_time",
)
# Planner settings of an append transaction (see PostgresStore.write).
_KEYED_PLANS_ONLY = (
    "SELECT set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true), "
    "set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)"
)
# BEGIN and the writer lock (see the module docstring) in one trip, as a simple-protocol query;
# an append adds its planner settings to it. READ COMMITTED whatever the database's default:
# each statement after the lock must see every commit before it (see the module docstring).
_BEGIN_LOCKED = f"BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({LEDGER_LOCK})"
_BEGIN_APPEND = f"{_BEGIN_LOCKED}; {_KEYED_PLANS_ONLY}"


def _rows(param: int, types: Sequence[str]) -> str:
    """The rows of parameter `param`, sent as one JSON array of arrays, as a SELECT of columns
    of `types`. One text per table costs the driver almost nothing: an array parameter per
    column (unnest) cost it 10 us a row, testing every element for being a nested array."""
    columns = ", ".join(f"e->>{i}" if t == "text" else f"(e->>{i})::{t}" for i, t in enumerate(types))
    return f"SELECT {columns} FROM jsonb_array_elements(${param}::jsonb) AS e"


# What an append reads under the lock, in one statement: the head, the batch's ids already in
# the ledger, its sessions' sequences and counts, its connections' states. Keys go in as JSON,
# and rows that come back by the thousand are aggregated into JSON by the server: one value to
# decode (as text, by orjson: the connection's json codec is SQLAlchemy's, the standard
# library's).
_READ_STATE = f"""
SELECT
  ({HEAD_SQL}),
  (SELECT json_agg(json_build_array(event_id, position, type, session_id, event_time,
                                    connection_id, creation_time, data, reason, project_id,
                                    source_format, vendor_reason, origin))::text
     FROM connection_ledger WHERE event_id IN (SELECT jsonb_array_elements_text($1::jsonb))),
  (SELECT json_agg(json_build_array(s.session_id, s.last_sequence, coalesce(p.count, 0)))::text
     FROM ledger_sessions s LEFT JOIN projection_sessions p ON p.session_id = s.session_id
    WHERE s.session_id IN (SELECT jsonb_array_elements_text($2::jsonb))),
  (SELECT json_agg(json_build_array(c.session_id, c.connection_id, c.live, c.creation_time, c.data,
                                    c.created_position, c.destroyed_position, c.reason,
                                    c.created_event_time, c.destroyed_event_time))::text
     FROM projection_connections c
     JOIN ({_rows(3, ("text", "text"))}) AS k(s, c) ON c.session_id = k.s AND c.connection_id = k.c)
"""
_LEDGER_TYPES = (
    "bigint", "bigint", "text", "text", "text", "bigint", "bigint", "text", "bigint", "text",
    "text", "boolean", "text", "text", "text", "text", "bigint", "text", "text",
)  # fmt: skip
_CONNECTION_TYPES = (
    "text",
    "text",
    "boolean",
    "bigint",
    "text",
    "bigint",
    "bigint",
    "text",
    "bigint",
    "bigint",
)

# Everything an append writes after its fold, in one statement: data-modifying CTEs, each on
# a table of its own. (Ledger rows of any but a small batch go by COPY, and come empty here.)
_WRITE = f"""
WITH ledger AS (
  INSERT INTO connection_ledger ({", ".join(LEDGER_COLUMNS)})
  {_rows(1, _LEDGER_TYPES)}
), sessions AS (
  INSERT INTO ledger_sessions (session_id, last_sequence, first_position, last_position)
  {_rows(2, ("text", "bigint", "bigint", "bigint"))}
  ON CONFLICT (session_id) DO UPDATE SET
    last_sequence = excluded.last_sequence, last_position = excluded.last_position
), new_connections AS (
  INSERT INTO projection_connections ({", ".join(_CONNECTION_COLUMNS)})
  {_rows(3, _CONNECTION_TYPES)}
), changed_connections AS (
  UPDATE projection_connections AS p SET live = k.live, creation_time = k.creation_time,
    data = k.data, created_position = k.created_position,
    destroyed_position = k.destroyed_position, reason = k.reason,
    created_event_time = k.created_event_time, destroyed_event_time = k.destroyed_event_time
  FROM ({_rows(4, _CONNECTION_TYPES)}) AS k({", ".join(_CONNECTION_COLUMNS)})
  WHERE p.session_id = k.session_id AND p.connection_id = k.connection_id
), counts AS (
  INSERT INTO projection_sessions (session_id, count)
  {_rows(5, ("text", "bigint"))}
  ON CONFLICT (session_id) DO UPDATE SET count = excluded.count
)
{checkpoint_upsert("$6", "$7")}
"""
# Rows of a table above this many go by COPY of their own rather than in `_WRITE`: COPY
# costs two more round trips, and the server takes its rows in half the time.
_COPY_FROM = 200


# Claims on running an event's hooks (pipeline/batches.py): a new claim, or one taken over from a
# claimant that has held it since before the staleness bound.
_CLAIM_HOOKS = """
INSERT INTO hook_claims (event_id, owner, claimed_at)
SELECT e, $2, (extract(epoch FROM clock_timestamp()) * 1000)::bigint
FROM jsonb_array_elements_text($1::jsonb) AS e ORDER BY e
ON CONFLICT (event_id) DO UPDATE SET owner = excluded.owner, claimed_at = excluded.claimed_at
WHERE hook_claims.claimed_at < excluded.claimed_at - $3 OR hook_claims.owner = excluded.owner
RETURNING event_id
"""
_RELEASE_HOOKS = (
    "DELETE FROM hook_claims WHERE event_id IN (SELECT jsonb_array_elements_text($1::jsonb)) AND owner = $2"
)

# Up to this many keys the planner chooses index probes by itself.
_PLANNED_BY_ITSELF = 1000
# A range of records as one text of lines, built by the server: one value for the driver to
# decode instead of a record per row.
_LINE_RANGE = (
    "SELECT string_agg(line, E'\\n' ORDER BY position) FROM ("
    f"SELECT position, {POSTGRES_RECORD_JSON} AS line FROM connection_ledger "
    "WHERE position > $1 AND position <= $2) AS range"
)
# work_mem and maintenance_work_mem of the rebuild transaction (see PostgresStore.rebuild).
REBUILD_WORK_MEM = "256MB"
# The name of the projection's primary key, quoted, when the current role may drop it and add
# it back (it owns the table, directly or through a role it inherits); else NULL.
_OWNED_PROJECTION_KEY = """
SELECT quote_ident(c.conname)
FROM pg_constraint AS c JOIN pg_class AS t ON t.oid = c.conrelid
WHERE c.conrelid = 'projection_connections'::regclass AND c.contype = 'p'
  AND pg_has_role(current_user, t.relowner, 'USAGE')
"""


def _json(values: Sequence[Any]) -> str:
    return orjson.dumps(values).decode()


class _PostgresUnit:
    def __init__(self, pg: Any) -> None:
        self.pg = pg

    async def head(self) -> int:
        return int(await self.pg.fetchval(HEAD_SQL))

    async def existing(self, ids: Sequence[str]) -> dict[str, ExistingEvent]:
        rows = await self.pg.fetch(
            "SELECT event_id, position, type, session_id, event_time, connection_id, "
            "creation_time, data, reason, project_id, source_format, vendor_reason, origin "
            "FROM connection_ledger "
            "WHERE event_id = ANY($1::text[])",
            list(ids),
        )
        return {row[0]: ExistingEvent(row[1], tuple(row[2:])) for row in rows}

    async def read_state(
        self, ids: Sequence[str], session_ids: Sequence[str], keys: Sequence[ConnectionKey]
    ) -> BatchState:
        head, stored, states, found = await self.pg.fetchrow(
            _READ_STATE, _json(ids), _json(session_ids), _json(keys)
        )
        return BatchState(
            int(head),
            {row[0]: ExistingEvent(row[1], tuple(row[2:])) for row in orjson.loads(stored or "[]")},
            {row[0]: (row[1], row[2]) for row in orjson.loads(states or "[]")},
            {(row[0], row[1]): ConnectionState(*row[2:]) for row in orjson.loads(found or "[]")},
        )

    async def insert_ledger(self, rows: Sequence[LedgerRow]) -> None:
        await self.pg.copy_records_to_table("connection_ledger", records=rows, columns=LEDGER_COLUMNS)

    async def write(self, writes: BatchWrites) -> None:
        ledger, new_connections = writes.ledger, writes.new_connections
        if len(ledger) > _COPY_FROM:
            await self.insert_ledger(ledger)
            ledger = ()
        if len(new_connections) > _COPY_FROM:
            await self.pg.copy_records_to_table(
                "projection_connections", records=new_connections, columns=_CONNECTION_COLUMNS
            )
            new_connections = ()
        await self.pg.execute(
            _WRITE,
            _json(ledger),
            _json(writes.ledger_sessions),
            _json(new_connections),
            _json(writes.changed_connections),
            _json(writes.counts),
            CHECKPOINT,
            writes.checkpoint,
        )

    async def set_checkpoint(self, name: str, position: int) -> None:
        await self.pg.execute(checkpoint_upsert("$1", "$2"), name, position)

    async def insert_rejections(self, rows: Sequence[RejectionRow]) -> None:
        await self.pg.executemany(
            "INSERT INTO rejected_messages (received_at, source, subject, headers, raw, code, "
            "message, field, message_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
            "ON CONFLICT (message_key) DO NOTHING",
            rows,
        )


class PostgresStore(LedgerStore):
    dialect = "postgresql"
    record_json_sql = POSTGRES_RECORD_JSON

    @asynccontextmanager
    async def _driver_on(self, engine: AsyncEngine) -> AsyncIterator[Any]:
        """The asyncpg connection behind a pooled SQLAlchemy connection. Only the driver is
        used on it, so SQLAlchemy's own transaction bookkeeping stays idle."""
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            pg: Any = raw.driver_connection
            try:
                yield pg
            finally:
                # A connection goes back to the pool only when it is idle: one left inside a
                # transaction (a statement cancelled halfway, a ROLLBACK that could not be sent)
                # would hold the writer lock for as long as it sat there.
                if pg.is_closed() or pg.is_in_transaction():
                    await connection.invalidate()

    @asynccontextmanager
    async def _locked(self, begin: str = _BEGIN_LOCKED) -> AsyncIterator[Any]:
        """A transaction holding the writer lock: see the module docstring, this lock is what
        keeps positions in commit order."""
        async with self._driver() as pg:
            await pg.execute(begin)
            try:
                yield pg
            except BaseException:
                with suppress(Exception):
                    await pg.execute("ROLLBACK")
                raise
            await pg.execute("COMMIT")

    @asynccontextmanager
    async def write(self) -> AsyncIterator[_PostgresUnit]:
        # Every statement of an append reads or writes a batch's rows by key. Left to its
        # statistics (always behind during an import, when the tables grow by the second), the
        # planner often prefers to scan a whole table into a hash table instead: fine at a
        # million rows, but the cost then grows with the ledger rather than with the batch.
        # For this transaction only, plans are index probes (_BEGIN_APPEND).
        async with self._locked(_BEGIN_APPEND) as pg:
            yield _PostgresUnit(pg)

    async def known(self, ids: Sequence[str]) -> dict[str, ExistingEvent]:
        with transient_errors():
            async with self._driver() as pg:
                if len(ids) <= _PLANNED_BY_ITSELF:
                    return await _PostgresUnit(pg).existing(ids)
                # An import's batch of tens of thousands of ids: index probes, as in `write`
                # (the settings need a transaction: two more round trips, for a large batch).
                async with pg.transaction(isolation="read_committed"):
                    await pg.execute(_KEYED_PLANS_ONLY)
                    return await _PostgresUnit(pg).existing(ids)

    async def _claim(self, ids_json: str, owner: str, timeout_ms: int) -> set[str]:
        async with self._driver() as pg:
            # One statement, its own transaction (the engine's autocommit): the claim is
            # visible to every other process the moment it returns.
            rows = await pg.fetch(_CLAIM_HOOKS, ids_json, owner, timeout_ms)
        return {row[0] for row in rows}

    async def _release(self, ids_json: str, owner: str) -> None:
        async with self._driver() as pg:
            await pg.execute(_RELEASE_HOOKS, ids_json, owner)

    async def rebuild(self) -> int:
        with transient_errors():
            async with self._locked() as pg:
                # TRUNCATE, unlike DELETE, leaves no dead rows behind for a million tombstones.
                await pg.execute("TRUNCATE projection_connections, projection_sessions")
                # The grouping holds a row per connection in a hash table: with the default
                # 4 MB it spills to disk in batches and takes twice as long. The sort that
                # builds the primary key gets as much. For this transaction only; the server's
                # memory, not this process's.
                await pg.execute(
                    f"SET LOCAL work_mem = '{REBUILD_WORK_MEM}'; "
                    f"SET LOCAL maintenance_work_mem = '{REBUILD_WORK_MEM}'"
                )
                key = await pg.fetchval(_OWNED_PROJECTION_KEY)
                if key is None:
                    await pg.execute(REBUILD_CONNECTIONS_POSTGRES_SORTED)
                else:
                    # The rows go into the table without its key, which is then built in one
                    # sort (see rebuild.py). TRUNCATE above took the table's exclusive lock:
                    # nobody sees it without its key, and a failure rolls the DDL back too.
                    await pg.execute(f"ALTER TABLE projection_connections DROP CONSTRAINT {key}")
                    await pg.execute(REBUILD_CONNECTIONS_POSTGRES)
                    await pg.execute(
                        f"ALTER TABLE projection_connections ADD CONSTRAINT {key} "
                        "PRIMARY KEY (session_id, connection_id)"
                    )
                await pg.execute(REBUILD_SESSIONS)
                unit = _PostgresUnit(pg)
                head = await unit.head()
                await unit.set_checkpoint(CHECKPOINT, head)
                return head

    async def _ledger_page(
        self, pg: Any, columns: str, last: int, size: int, session_id: str | None
    ) -> list[tuple[Any, ...]]:
        if session_id is None:
            return list(
                await pg.fetch(
                    f"SELECT {columns} FROM connection_ledger WHERE position > $1 ORDER BY position LIMIT $2",
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

    async def _line_range(self, pg: Any, low: int, high: int) -> bytes:
        lines: str | None = await pg.fetchval(_LINE_RANGE, low, high)
        return b"" if lines is None else lines.encode() + b"\n"

    async def _head_on(self, pg: Any) -> int:
        return await _PostgresUnit(pg).head()

    async def _rejected_page(self, pg: Any, last: int, size: int) -> list[tuple[Any, ...]]:
        return list(
            await pg.fetch(
                f"SELECT {REJECTED_COLUMNS} FROM rejected_messages WHERE id > $1 ORDER BY id LIMIT $2",
                last,
                size,
            )
        )
