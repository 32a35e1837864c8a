"""The append path, written once for every database: dedupe, positions and sequences, the
projection fold, and the rows to write. The database-specific `WriteUnit` only fetches and
writes; it runs all of this inside one transaction that holds the writer lock, so that the
ledger rows, the projection rows and the checkpoint commit together or not at all.

The fold runs once per event on the ingest hot path (a million events is tens of seconds of
it), so it is written for speed: no per-event database call, locals instead of attribute
lookups, plain tuples for rows, and an event's content (for the conflict check) computed only
when a second copy of its id actually turns up. A large batch is folded a chunk at a time, and
each chunk's ledger rows go to the database while the next chunk is folded: Python and the
database work side by side instead of taking turns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import orjson

from service.errors import RejectCode
from service.events import Event, EventType, Origin, Source
from service.inbound import message_key
from service.ledger.model import (
    Appended,
    Candidate,
    Duplicate,
    ExistingEvent,
    Rejected,
    Rejection,
    Stored,
)
from service.projections.fold import ConnectionState, apply

__all__ = [
    "CHECKPOINT",
    "BatchState",
    "BatchWrites",
    "ConnectionKey",
    "ConnectionRow",
    "LedgerRow",
    "RejectionRow",
    "WriteUnit",
    "append_batch",
    "rejection_row",
]

CHECKPOINT = "connections"

# (position, sequence, event_id, session_id, type, event_time, recorded_at, connection_id,
#  creation_time, data, reason, default_prevented, prevented_by, hook_failures, source_format,
#  project_id, count_after, vendor_reason, origin): the order of schema.LEDGER_COLUMNS.
LedgerRow = tuple[
    int,
    int,
    str,
    str,
    str,
    int,
    int,
    str,
    int,
    str | None,
    str | None,
    bool,
    str | None,
    str | None,
    str,
    str | None,
    int,
    str | None,
    str | None,
]
ConnectionKey = tuple[str, str]
# (session_id, connection_id, live, creation_time, data, created_position, destroyed_position,
#  reason, created_event_time, destroyed_event_time): the columns of projection_connections, in
#  this order.
ConnectionRow = tuple[
    str, str, bool, int, str | None, int | None, int | None, str | None, int | None, int | None
]
# (received_at, source, subject, headers, raw, code, message, field, message_key)
RejectionRow = tuple[int, str, str | None, str | None, bytes, str, str, str | None, str | None]

# `EventType.X.value` goes through the enum's descriptor machinery (a third of a microsecond a
# call on 3.11); a dict lookup is a tenth of that, and rows must carry plain str, not the enum.
_TYPE_VALUES: Final = {t: t.value for t in EventType}
_FORMAT_VALUES: Final = {f: f.value for f in Source}
_ORIGIN_VALUES: Final = {o: o.value for o in Origin}
# Events folded between two hand-overs of ledger rows to the database (see `_Pipelined`).
FOLD_CHUNK: Final = 4000


@dataclass(slots=True)
class BatchState:
    """What an append reads under the writer lock before it folds: the head, and the stored
    state of the batch's events, sessions and connections."""

    head: int
    stored: dict[str, ExistingEvent]
    # session id -> (last sequence, live count), for sessions that have any
    sessions: dict[str, tuple[int, int]]
    states: dict[ConnectionKey, ConnectionState]


@dataclass(slots=True)
class BatchWrites:
    """Everything an append writes after its fold, but the ledger rows already handed to
    `insert_ledger`."""

    ledger: Sequence[LedgerRow]
    # (session id, last sequence, first position, last position)
    ledger_sessions: Sequence[tuple[str, int, int, int]]
    # Connections `read_state` did not find, and those it found, with their whole new row.
    new_connections: Sequence[ConnectionRow]
    changed_connections: Sequence[ConnectionRow]
    counts: Sequence[tuple[str, int]]
    checkpoint: int


class WriteUnit(Protocol):
    """One write transaction holding the writer lock, on one database. Each database makes as
    few trips as it can of the three steps; PostgreSQL one statement each."""

    async def read_state(
        self, ids: Sequence[str], session_ids: Sequence[str], keys: Sequence[ConnectionKey]
    ) -> BatchState: ...

    async def insert_ledger(self, rows: Sequence[LedgerRow]) -> None:
        """Ledger rows of a large batch, a chunk at a time while the fold goes on."""
        ...

    async def write(self, writes: BatchWrites) -> None: ...

    async def insert_rejections(self, rows: Sequence[RejectionRow]) -> None:
        """Store rejections; one whose message_key is stored already (a redelivered message,
        its batch committed before its acknowledgement was lost) is skipped."""
        ...


def rejection_row(rejection: Rejection) -> RejectionRow:
    incoming = rejection.incoming
    headers = None if incoming.headers is None else orjson.dumps(dict(incoming.headers)).decode()
    return (
        incoming.received_at,
        incoming.source,
        incoming.subject,
        headers,
        incoming.raw,
        rejection.code.value,
        rejection.message,
        rejection.field,
        message_key(incoming.ack_subject),
    )


def _conflict(candidate: Candidate, position: int) -> Rejection:
    return Rejection(
        candidate.incoming,
        RejectCode.CONFLICT,
        f"id {candidate.event.id!r} is already in the ledger at position {position} with other "
        "content; an id names one event: publish a different event under a new id",
        "id",
        candidate.slot,
    )


def _connection_row(key: ConnectionKey, state: ConnectionState) -> ConnectionRow:
    return (
        key[0],
        key[1],
        state.live,
        state.creation_time,
        state.data,
        state.created_position,
        state.destroyed_position,
        state.reason,
        state.created_event_time,
        state.destroyed_event_time,
    )


class _Pipelined:
    """One write in flight while the fold goes on. `then` waits for the write before (which
    keeps the order, and the connection at one statement at a time) and starts the next as a
    task, so that the database works while Python folds the next chunk."""

    def __init__(self, write: Callable[[list[LedgerRow]], Awaitable[None]]) -> None:
        self.write = write
        self.pending: asyncio.Future[None] | None = None

    async def then(self, rows: list[LedgerRow]) -> None:
        await self.finish()
        if rows:
            self.pending = asyncio.ensure_future(self.write(rows))
            # A turn of the event loop, so that the write reaches the database now.
            await asyncio.sleep(0)

    async def finish(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            await pending

    async def abandon(self) -> None:
        """After a failure: let a write in flight end before the transaction rolls back."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            await asyncio.wait([pending])
            if not pending.cancelled():
                pending.exception()


class _Fold:
    """The batch's positions, sequences, projection changes and outcomes, one event at a time,
    starting from the state read under the writer lock."""

    def __init__(
        self,
        head: int,
        stored: dict[str, ExistingEvent],
        sessions: dict[str, tuple[int, int]],
        states: dict[ConnectionKey, ConnectionState],
        recorded_at: int,
    ) -> None:
        self.position = head
        self.stored = stored
        self.sessions = sessions  # session id -> (last sequence, live count), kept current
        self.states = states  # connection -> state, kept current
        self.recorded_at = recorded_at
        self.outcomes: list[Stored] = []
        self.conflicts: list[Rejection] = []
        # id -> (position, event) of what this batch appended: a second copy later in the
        # same batch is a duplicate (or a conflict) of it.
        self.added: dict[str, tuple[int, Event]] = {}
        self.first_positions: dict[str, int] = {}
        self.last_positions: dict[str, int] = {}
        self.changed: dict[ConnectionKey, ConnectionState] = {}
        self.touched_counts: set[str] = set()

    def _repeat(self, candidate: Candidate) -> None:
        """A candidate whose id is in the ledger already, or earlier in this batch."""
        event = candidate.event
        if event.id in self.added:
            at, first = self.added[event.id]
            prior = ExistingEvent(at, first.content())
        else:
            prior = self.stored[event.id]
        if prior.content == event.content():
            self.outcomes.append(Duplicate(prior.position))
            return
        conflict = _conflict(candidate, prior.position)
        self.conflicts.append(conflict)
        self.outcomes.append(
            Rejected(
                conflict.code,
                conflict.message,
                conflict.field,
                candidate.incoming.raw,
                candidate.incoming.subject,
            )
        )

    def run(self, candidates: Sequence[Candidate]) -> list[LedgerRow]:
        """Fold `candidates` (the next ones of the batch, in order); their new ledger rows."""
        rows: list[LedgerRow] = []
        # The loop's names, bound to locals once.
        append_row = rows.append
        append_outcome = self.outcomes.append
        stored, added, sessions, states = self.stored, self.added, self.sessions, self.states
        first_positions, last_positions = self.first_positions, self.last_positions
        changed, touched_counts = self.changed, self.touched_counts
        type_values, format_values, recorded_at = _TYPE_VALUES, _FORMAT_VALUES, self.recorded_at
        origin_values = _ORIGIN_VALUES
        position = self.position
        for candidate in candidates:
            event = candidate.event
            event_id = event.id
            if event_id in added or (stored and event_id in stored):
                # Idempotency forever: the unique index on event_id is the only source of
                # truth, read under the writer lock, so no time window applies.
                self._repeat(candidate)
                continue

            position += 1
            session_id = event.session_id
            sequence, count = sessions.get(session_id, (0, 0))
            sequence += 1
            decision = candidate.decision
            prevented = decision.prevented
            if not prevented:
                key = (session_id, event.connection_id)
                old = states.get(key)
                new = apply(
                    old, event.type, event.creation_time, event.data, event.reason, position, event.timestamp
                )
                if new is not None:
                    states[key] = changed[key] = new
                    # A change makes a connection live only from absent, and a tombstone of a
                    # connection that was live or absent.
                    if new.live:
                        count += 1
                    elif old is not None and old.live:
                        count -= 1
                    touched_counts.add(session_id)
            sessions[session_id] = (sequence, count)
            if session_id not in first_positions:
                first_positions[session_id] = position
            last_positions[session_id] = position
            failures = decision.failures
            append_row(
                (
                    position,
                    sequence,
                    event_id,
                    session_id,
                    type_values[event.type],
                    event.timestamp,
                    recorded_at,
                    event.connection_id,
                    event.creation_time,
                    event.data,
                    event.reason,
                    prevented,
                    decision.prevented_by,
                    orjson.dumps([f.as_dict() for f in failures]).decode() if failures else None,
                    format_values[event.source],
                    event.project_id,
                    count,
                    event.vendor_reason,
                    None if event.origin is None else origin_values[event.origin],
                )
            )
            append_outcome(Appended(position, sequence, count, prevented))
            added[event_id] = (position, event)
        self.position = position
        return rows


async def append_batch(
    unit: WriteUnit,
    candidates: Sequence[Candidate],
    rejections: Sequence[Rejection],
    recorded_at: int,
) -> tuple[list[Stored], int]:
    """Append what is new in `candidates`, store `rejections` (and any conflicts), and return
    one outcome per candidate, in order, with the ledger head after the batch."""
    # State is fetched for every candidate's session and connection, duplicates included: it
    # saves a pass to find the fresh ones, and duplicates are few.
    state = await unit.read_state(
        list({c.event.id for c in candidates}),
        list({c.event.session_id for c in candidates}),
        list({(c.event.session_id, c.event.connection_id) for c in candidates}),
    )
    head, sessions = state.head, state.sessions
    # Under the writer lock nothing else changes the projection, so what the lookup found is
    # what exists: a changed connection is inserted if it was not found, updated if it was.
    found = set(state.states)

    fold = _Fold(head, state.stored, sessions, state.states, recorded_at)
    unwritten: list[LedgerRow] = []
    if len(candidates) <= FOLD_CHUNK:
        # A batch of one chunk: its ledger rows go with the rest of the writes.
        unwritten = fold.run(candidates)
    else:
        inserting = _Pipelined(unit.insert_ledger)
        try:
            for start in range(0, len(candidates), FOLD_CHUNK):
                await inserting.then(fold.run(candidates[start : start + FOLD_CHUNK]))
            await inserting.finish()
        finally:
            await inserting.abandon()

    if fold.position > head:
        changed = [_connection_row(key, new) for key, new in fold.changed.items()]
        await unit.write(
            BatchWrites(
                ledger=unwritten,
                ledger_sessions=[
                    (sid, sessions[sid][0], first, fold.last_positions[sid])
                    for sid, first in fold.first_positions.items()
                ],
                new_connections=[row for row in changed if row[:2] not in found],
                changed_connections=[row for row in changed if row[:2] in found],
                counts=[(sid, sessions[sid][1]) for sid in fold.touched_counts],
                checkpoint=fold.position,
            )
        )
    stored_rejections = [*rejections, *fold.conflicts]
    if rejections and fold.conflicts:
        # Conflicts are found only now, under the lock: put them back in arrival order.
        stored_rejections.sort(key=lambda r: r.slot)
    if stored_rejections:
        await unit.insert_rejections([rejection_row(r) for r in stored_rejections])
    return fold.outcomes, fold.position
