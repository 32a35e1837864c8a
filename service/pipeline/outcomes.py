"""What the pipeline gives back to an edge for each message of a batch, and the batch's result.
The types made for every event are plain dataclasses, not frozen ones (see ledger/model.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.ledger.model import Appended, Duplicate, Rejected

__all__ = ["BatchResult", "Deferred", "IgnoredInput", "Outcome"]


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
