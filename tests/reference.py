"""A plain reference fold of the connection projection, written from the contract's rules
(CONTRACT 2.5) and not from service code, for the property and concurrency tests to compare
the service against.

- a create that is not prevented adds the connection, unless it is live or tombstoned;
- a destroy that is not prevented removes it and leaves a permanent tombstone (also when the
  connection was never seen: its create, if it ever comes, is late and stays out);
- a prevented event changes nothing and leaves no tombstone;
- a session's count is the size of its live set, never negative.

A projection row keeps the attributes of the first event that changed the connection's state
(creationTime and data from the create that added it, or from the destroy that tombstoned a
never-seen connection), the position of that create and of the first destroy, and the reason
of that destroy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CREATED = "connectionCreated"
DESTROYED = "connectionDestroyed"

# (session_id, connection_id, live, creation_time, data, created_position, destroyed_position,
#  reason): the columns of projection_connections, in this order.
ConnectionRow = tuple[str, str, bool, int, "str | None", "int | None", "int | None", "str | None"]


@dataclass(frozen=True, slots=True)
class Step:
    """One ledger record, as the fold needs it."""

    position: int
    session_id: str
    type: str
    connection_id: str
    creation_time: int
    data: str | None
    reason: str | None
    prevented: bool = False


@dataclass(slots=True)
class ReferenceFold:
    rows: dict[tuple[str, str], ConnectionRow] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def apply(self, step: Step) -> int:
        """Fold one record in; returns its session's count after it."""
        session = step.session_id
        self.counts.setdefault(session, 0)
        if not step.prevented:
            key = (session, step.connection_id)
            row = self.rows.get(key)
            if step.type == CREATED:
                if row is None:
                    self.rows[key] = (
                        session,
                        step.connection_id,
                        True,
                        step.creation_time,
                        step.data,
                        step.position,
                        None,
                        None,
                    )
                    self.counts[session] += 1
            elif step.type == DESTROYED:
                if row is None:
                    self.rows[key] = (
                        session,
                        step.connection_id,
                        False,
                        step.creation_time,
                        step.data,
                        None,
                        step.position,
                        step.reason,
                    )
                elif row[2]:
                    self.rows[key] = (*row[:2], False, row[3], row[4], row[5], step.position, step.reason)
                    self.counts[session] -= 1
            else:
                raise AssertionError(f"not a connection event type: {step.type!r}")
        assert self.counts[session] >= 0
        return self.counts[session]

    def connection_rows(self) -> list[ConnectionRow]:
        return sorted(self.rows.values(), key=lambda r: (r[0], r[1]))

    def count(self, session_id: str) -> int:
        return self.counts.get(session_id, 0)
