"""The two-phase-set fold of one connection."""

from __future__ import annotations

from service.events import EventType
from service.projections.fold import ConnectionState, apply

C, D = EventType.CREATED, EventType.DESTROYED


def test_create_then_destroy() -> None:
    live = apply(None, C, 10, "a", None, 1, 1000)
    assert live == ConnectionState(True, 10, "a", 1, None, None, 1000, None)
    gone = apply(live, D, 99, "other", "clientDisconnected", 2, 2500)
    assert gone == ConnectionState(False, 10, "a", 1, 2, "clientDisconnected", 1000, 2500)


def test_a_second_create_and_a_second_destroy_change_nothing() -> None:
    live = apply(None, C, 10, "a", None, 1, 1000)
    assert apply(live, C, 11, "b", None, 3, 1100) is None
    gone = apply(live, D, 10, "a", "networkDisconnected", 4, 1200)
    assert apply(gone, D, 10, "a", "clientDisconnected", 5, 1300) is None


def test_a_destroy_first_leaves_a_tombstone_the_late_create_cannot_pass() -> None:
    tomb = apply(None, D, 10, "a", "networkDisconnected", 1, 900)
    assert tomb == ConnectionState(False, 10, "a", None, 1, "networkDisconnected", None, 900)
    assert apply(tomb, C, 10, "a", None, 2, 800) is None
