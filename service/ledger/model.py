"""What goes into the append path and what comes out of it. Pure data.

The types made for every event (Incoming, Appended, Duplicate) are plain dataclasses, not frozen
ones: a frozen dataclass sets each field through object.__setattr__, five times slower, and
nothing changes these after they are made."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from service.errors import RejectCode
from service.events import Event
from service.hooks.runner import ALLOWED, Decision

__all__ = [
    "Appended",
    "Candidate",
    "Deferred",
    "Duplicate",
    "ExistingEvent",
    "IgnoredInput",
    "Incoming",
    "Outcome",
    "Rejected",
    "Rejection",
    "message_key",
]


@dataclass(slots=True)
class Incoming:
    """One message as it arrived, kept whole so that a rejection can store it."""

    raw: bytes
    received_at: int
    source: str = "nats"
    subject: str | None = None
    headers: Mapping[str, str] | None = None
    # A JetStream delivery's reply subject ($JS.ACK...), which names the message's stream and
    # stream sequence: its rejection is stored once however often it is delivered (see
    # `message_key`). Kept as it came and parsed only for a rejection, off the hot path.
    ack_subject: str | None = None


def message_key(ack_subject: str | None) -> str | None:
    """`<stream>:<stream sequence>:<time stored>` of a JetStream message, from its delivery's
    reply subject: the same for every delivery of one message (a redelivery has another
    delivery count and consumer sequence, never another stream sequence or time). The time
    (nanoseconds) tells apart two messages with one sequence in a stream deleted and created
    again, whose sequences start over at 1. None when there is none, or it is not a JetStream
    ack subject.

    The subject is $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.
    <pending>, or from nats-server 2.10 on possibly $JS.ACK.<domain>.<account hash>.<stream>...
    with a random token at the end (as nats-py's Msg.metadata reads them)."""
    if ack_subject is None:
        return None
    tokens = ack_subject.split(".")
    if tokens[:2] != ["$JS", "ACK"]:
        return None
    if len(tokens) == 9:
        return f"{tokens[2]}:{tokens[5]}:{tokens[7]}"
    if len(tokens) >= 11:
        return f"{tokens[4]}:{tokens[7]}:{tokens[9]}"
    return None


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


@dataclass(frozen=True, slots=True)
class IgnoredInput:
    kind: str


@dataclass(frozen=True, slots=True)
class Deferred:
    """A copy of a new event whose hooks another process is running: not appended here; the
    edge hands it back, to be taken again once that process has appended it."""

    event_id: str


Outcome = Appended | Duplicate | Rejected | IgnoredInput | Deferred


@dataclass(slots=True)
class BatchResult:
    """Outcomes in input order, the ledger head after the batch, and what the batch appended
    as (position, session id, the session's count after it), in position order."""

    outcomes: list[Outcome] = field(default_factory=list)
    head: int = 0
    changes: list[tuple[int, str, int]] = field(default_factory=list)

    def tally(self) -> dict[str, int]:
        counts = {"appended": 0, "duplicates": 0, "rejected": 0, "ignored": 0}
        for outcome in self.outcomes:
            if isinstance(outcome, Appended):
                counts["appended"] += 1
            elif isinstance(outcome, Duplicate):
                counts["duplicates"] += 1
            elif isinstance(outcome, Rejected):
                counts["rejected"] += 1
            elif isinstance(outcome, IgnoredInput):
                counts["ignored"] += 1
        return counts
