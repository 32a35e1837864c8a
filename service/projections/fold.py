"""The connection projection's fold, pure: how one event changes one connection's state.

The state is a two-phase set per session (a CRDT): a connection can be added once and removed
once, and a removal is permanent (a tombstone). So the final state does not depend on the order
in which events arrive, only on which events are not prevented:

    gone  if any destroy applied,  else  live  if any create applied,  else  absent

Attributes are those of the first event (by position) that changed the state. This is what lets
`rebuild` compute the same tables with one set-based query (see `rebuild.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from service.events import EventType

__all__ = ["ConnectionState", "apply"]


@dataclass(slots=True)
class ConnectionState:
    """One row of the connection projection. `live` false means a tombstone. Never changed once
    made (`apply` makes a new one); not frozen, because one is made per event on ingest and a
    frozen dataclass is five times slower to make."""

    live: bool
    creation_time: int
    data: str | None
    created_position: int | None
    destroyed_position: int | None
    reason: str | None
    # The event times of the records at created_position and destroyed_position.
    created_event_time: int | None
    destroyed_event_time: int | None


def apply(
    state: ConnectionState | None,
    type_: EventType,
    creation_time: int,
    data: str | None,
    reason: str | None,
    position: int,
    event_time: int,
) -> ConnectionState | None:
    """The state after a (not prevented) event, or None when the event changes nothing.

    - absent + create  -> live
    - live   + create  -> unchanged (a second create of a live connection)
    - absent + destroy -> tombstone (the create, if it ever arrives, is late and stays out)
    - live   + destroy -> tombstone
    - tombstone + any  -> unchanged (a connectionId names one connection once)
    """
    if type_ is EventType.CREATED:
        if state is not None:
            return None
        return ConnectionState(True, creation_time, data, position, None, None, event_time, None)
    if state is None:
        return ConnectionState(False, creation_time, data, None, position, reason, None, event_time)
    if not state.live:
        return None
    return ConnectionState(
        False,
        state.creation_time,
        state.data,
        state.created_position,
        position,
        reason,
        state.created_event_time,
        event_time,
    )
