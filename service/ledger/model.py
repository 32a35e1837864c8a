"""What goes into the append path and what comes out of it. Pure data.

The types made for every event (Candidate, Appended, Duplicate) are plain dataclasses, not frozen
ones: a frozen dataclass sets each field through object.__setattr__, five times slower, and
nothing changes these after they are made."""

from __future__ import annotations

from dataclasses import dataclass

from service.decisions import ALLOWED, Decision
from service.errors import RejectCode
from service.events import Event
from service.inbound import Incoming

__all__ = [
    "Appended",
    "Candidate",
    "Duplicate",
    "ExistingEvent",
    "Rejected",
    "Rejection",
    "Stored",
]


@dataclass(slots=True)
class Candidate:
    """A valid event on its way into the ledger, with the hooks' decision."""

    event: Event
    incoming: Incoming
    decision: Decision = ALLOWED
    slot: int = 0  # its message's place in the batch


@dataclass(frozen=True, slots=True)
class Rejection:
    """An input that will not be appended, stored whole in the rejected table."""

    incoming: Incoming
    code: RejectCode
    message: str
    field: str | None = None
    # Its message's place in the batch: a batch's rejections are stored in arrival order.
    slot: int = 0


@dataclass(slots=True)
class ExistingEvent:
    position: int
    content: tuple[object, ...]


@dataclass(slots=True)
class Appended:
    position: int
    sequence: int
    count: int
    prevented: bool = False


@dataclass(slots=True)
class Duplicate:
    position: int


@dataclass(frozen=True, slots=True)
class Rejected:
    code: RejectCode
    message: str
    field: str | None = None
    raw: bytes = b""
    subject: str | None = None


# What an append gives back for each candidate it was handed.
Stored = Appended | Duplicate | Rejected
