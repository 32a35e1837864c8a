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
from typing import Any

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


def live_at(records: list[dict[str, Any]], session_id: str, position: int) -> tuple[int, list[str]]:
    """The session's count and live connection ids (in the order they went live) after folding
    the replayed `records` up to `position`."""
    fold = ReferenceFold()
    went_live: dict[str, int] = {}
    for record in records:
        if record["position"] > position:
            break
        fold.apply(_step(record))
    for (session, connection), row in fold.rows.items():
        if session == session_id and row[2]:
            went_live[connection] = row[5] or 0
    return fold.count(session_id), sorted(went_live, key=went_live.__getitem__)


def _step(record: dict[str, Any]) -> Step:
    return Step(
        record["position"],
        record["sessionId"],
        record["type"],
        record["connection"]["connectionId"],
        record["connection"]["creationTime"],
        record["connection"]["data"],
        record["reason"],
        record["defaultPrevented"],
    )


def usage_by_fold(records: list[dict[str, Any]], session_id: str, start: int, end: int) -> dict[str, Any]:
    """CONTRACT section 12's usage, by brute force over the replayed records: the connections
    whose create the fold applied, each from that create's timestamp to the timestamp of the
    destroy that took it out (none while live; a destroy stamped before the create ends it at
    once), and every figure computed instant by instant."""
    fold = ReferenceFold()
    lives: dict[str, list[Any]] = {}  # connection -> [start, end or None, reason]
    for record in records:
        if record["sessionId"] != session_id:
            continue
        step = _step(record)
        key = (session_id, step.connection_id)
        before = fold.rows.get(key)
        fold.apply(step)
        after = fold.rows.get(key)
        if before is None and after is not None and after[2]:
            lives[step.connection_id] = [record["timestamp"], None, None]
        elif before is not None and before[2] and after is not None and not after[2]:
            life = lives[step.connection_id]
            life[1], life[2] = max(record["timestamp"], life[0]), record["reason"]

    def there(life: list[Any], t: int) -> bool:
        s, e = life[0], life[1]
        if e == s:
            return t == s
        return s <= t and (e is None or t < e)

    inside = [
        life
        for life in lives.values()
        if (
            start <= life[0] < end
            if life[1] == life[0]
            else max(life[0], start) < (end if life[1] is None else min(life[1], end))
        )
    ]
    milliseconds = sum(
        (end if life[1] is None else min(life[1], end)) - max(life[0], start)
        for life in inside
        if life[1] != life[0]
    )
    by_reason: dict[str, int] = {}
    for life in inside:
        if life[1] is not None and life[1] < end:
            by_reason[life[2] or "unknown"] = by_reason.get(life[2] or "unknown", 0) + 1
    instants = sorted(
        {start} | {t for life in inside for t in life[:2] if t is not None and start <= t < end}
    )
    peak, peak_at = 0, None
    for t in instants:
        n = sum(there(life, t) for life in inside)
        if n > peak:
            peak, peak_at = n, t
    return {
        "sessionId": session_id,
        "from": start,
        "to": end,
        "peak": {"count": peak, "timestamp": peak_at},
        "connectionMilliseconds": milliseconds,
        "connections": len(inside),
        "byReason": dict(sorted(by_reason.items())),
        "open": sum(1 for life in inside if life[1] is None or life[1] >= end),
    }
