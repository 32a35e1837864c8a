"""The append path, written once for every database: dedupe, positions and sequences, the
projection fold, and the rows to write. The database-specific `WriteUnit` only fetches and
writes; it runs all of this inside one transaction that holds the writer lock, so that the
ledger rows, the projection rows and the checkpoint commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import orjson

from service.errors import RejectCode
from service.events import Event
from service.ledger.model import (
    Appended,
    Candidate,
    Duplicate,
    ExistingEvent,
    Outcome,
    Rejected,
    Rejection,
)
from service.projections.fold import ConnectionState, apply

__all__ = [
    "CHECKPOINT",
    "ConnectionKey",
    "LedgerRow",
    "RejectionRow",
    "WriteUnit",
    "append_batch",
    "rejection_row",
]

CHECKPOINT = "connections"

# (position, sequence, event_id, session_id, type, event_time, recorded_at, connection_id,
#  creation_time, data, reason, default_prevented, prevented_by, hook_failures, source_format,
#  project_id, count_after): the order of schema.LEDGER_COLUMNS.
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
]
ConnectionKey = tuple[str, str]
# (received_at, source, subject, headers, raw, code, message, field)
RejectionRow = tuple[int, str, str | None, str | None, bytes, str, str, str | None]


class WriteUnit(Protocol):
    """One write transaction holding the writer lock, on one database."""

    async def head(self) -> int: ...

    async def existing(self, ids: Sequence[str]) -> dict[str, ExistingEvent]: ...

    async def session_state(self, session_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """session id -> (last sequence, live count), for sessions that have any."""
        ...

    async def connection_states(
        self, keys: Sequence[ConnectionKey]
    ) -> dict[ConnectionKey, ConnectionState]: ...

    async def insert_ledger(self, rows: Sequence[LedgerRow]) -> None: ...

    async def upsert_ledger_sessions(self, rows: Sequence[tuple[str, int, int, int]]) -> None:
        """(session id, last sequence, first position, last position)."""
        ...

    async def upsert_connections(self, rows: Sequence[tuple[str, str, ConnectionState]]) -> None: ...

    async def upsert_session_counts(self, rows: Sequence[tuple[str, int]]) -> None: ...

    async def set_checkpoint(self, name: str, position: int) -> None: ...

    async def insert_rejections(self, rows: Sequence[RejectionRow]) -> None: ...


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
    )


def _conflict(candidate: Candidate, position: int) -> Rejection:
    return Rejection(
        candidate.incoming,
        RejectCode.CONFLICT,
        f"id {candidate.event.id!r} is already in the ledger at position {position} with other "
        "content; an id names one event: publish a different event under a new id",
        "id",
    )


async def append_batch(
    unit: WriteUnit,
    candidates: Sequence[Candidate],
    rejections: Sequence[Rejection],
    recorded_at: int,
) -> tuple[list[Outcome], int]:
    """Append what is new in `candidates`, store `rejections` (and any conflicts), and return
    one outcome per candidate, in order, with the ledger head after the batch."""
    head = await unit.head()
    existing = await unit.existing(list({c.event.id for c in candidates}))
    fresh = [c.event for c in candidates if c.event.id not in existing]
    sessions = await unit.session_state(list({e.session_id for e in fresh}))
    states = await unit.connection_states(list({(e.session_id, e.connection_id) for e in fresh}))

    outcomes: list[Outcome] = []
    stored_rejections = list(rejections)
    ledger_rows: list[LedgerRow] = []
    first_positions: dict[str, int] = {}
    last_positions: dict[str, int] = {}
    changed: dict[ConnectionKey, ConnectionState] = {}
    touched_counts: set[str] = set()
    position = head
    for candidate in candidates:
        event: Event = candidate.event
        prior = existing.get(event.id)
        if prior is not None:
            # Idempotency forever: the unique index on event_id is the only source of truth,
            # read under the writer lock, so no time window applies.
            if prior.content == event.content():
                outcomes.append(Duplicate(prior.position))
            else:
                conflict = _conflict(candidate, prior.position)
                stored_rejections.append(conflict)
                outcomes.append(
                    Rejected(
                        conflict.code,
                        conflict.message,
                        conflict.field,
                        candidate.incoming.raw,
                        candidate.incoming.subject,
                    )
                )
            continue

        position += 1
        session_id = event.session_id
        last_sequence, count = sessions.get(session_id, (0, 0))
        decision = candidate.decision
        if not decision.prevented:
            key = (session_id, event.connection_id)
            old = states.get(key)
            new = apply(old, event.type, event.creation_time, event.data, event.reason, position)
            if new is not None:
                states[key] = changed[key] = new
                count += int(new.live) - int(old is not None and old.live)
                touched_counts.add(session_id)
        sessions[session_id] = (last_sequence + 1, count)
        first_positions.setdefault(session_id, position)
        last_positions[session_id] = position
        failures = (
            orjson.dumps([f.as_dict() for f in decision.failures]).decode() if decision.failures else None
        )
        ledger_rows.append(
            (
                position,
                last_sequence + 1,
                event.id,
                session_id,
                event.type.value,
                event.timestamp,
                recorded_at,
                event.connection_id,
                event.creation_time,
                event.data,
                event.reason,
                decision.prevented,
                decision.prevented_by,
                failures,
                event.source_format.value,
                event.project_id,
                count,
            )
        )
        outcomes.append(Appended(position, last_sequence + 1, count, decision.prevented))
        # A second copy of this id later in the same batch is a duplicate of this one.
        existing[event.id] = ExistingEvent(position, event.content())

    if ledger_rows:
        await unit.insert_ledger(ledger_rows)
        await unit.upsert_ledger_sessions(
            [(sid, sessions[sid][0], first, last_positions[sid]) for sid, first in first_positions.items()]
        )
        if changed:
            await unit.upsert_connections([(s, c, state) for (s, c), state in changed.items()])
            await unit.upsert_session_counts([(sid, sessions[sid][1]) for sid in touched_counts])
        await unit.set_checkpoint(CHECKPOINT, position)
    if stored_rejections:
        await unit.insert_rejections([rejection_row(r) for r in stored_rejections])
    return outcomes, position
