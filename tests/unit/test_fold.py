"""The two-phase-set fold of one connection."""

from __future__ import annotations

from service.events import EventType
from service.projections.fold import ConnectionState, apply

C, D = EventType.CREATED, EventType.DESTROYED


def test_create_then_destroy() -> None:
    live = apply(None, C, 10, "a", None, 1)
    assert live == ConnectionState(True, 10, "a", 1, None, None)
    gone = apply(live, D, 99, "other", "clientDisconnected", 2)
    assert gone == ConnectionState(False, 10, "a", 1, 2, "clientDisconnected")


def test_a_second_create_and_a_second_destroy_change_nothing() -> None:
    live = apply(None, C, 10, "a", None, 1)
    assert apply(live, C, 11, "b", None, 3) is None
    gone = apply(live, D, 10, "a", "networkDisconnected", 4)
    assert apply(gone, D, 10, "a", "clientDisconnected", 5) is None


def test_a_destroy_first_leaves_a_tombstone_the_late_create_cannot_pass() -> None:
    tomb = apply(None, D, 10, "a", "networkDisconnected", 1)
    assert tomb == ConnectionState(False, 10, "a", None, 1, "networkDisconnected")
    assert apply(tomb, C, 10, "a", None, 2) is None
