"""What the pipeline gives back to an edge for each message of a batch, and the batch's result.
The types made for every event are plain dataclasses, not frozen ones (see ledger/model.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.ledger.model import Appended, Duplicate, Rejected

__all__ = ["BatchResult", "Deferred", "IgnoredInput", "Outcome", "Tally"]


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

    def tally(self) -> Tally:
        tally = Tally()
        for outcome in self.outcomes:
            tally.add(outcome)
        return tally


@dataclass(slots=True)
class Tally:
    """Outcomes counted by kind: the one count behind the metrics and `connledger import`'s
    summary. Deferred copies are counted nowhere: they come again."""

    appended: int = 0
    prevented: int = 0  # of the appended, those whose default a hook prevented
    duplicates: int = 0
    ignored: int = 0
    rejected_by_code: dict[str, int] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_code.values())

    def summary(self) -> dict[str, int]:
        """The four counts as `connledger import` reports them."""
        return {
            "appended": self.appended,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "ignored": self.ignored,
        }

    def add(self, outcome: Outcome) -> None:
        if isinstance(outcome, Appended):
            self.appended += 1
            self.prevented += outcome.prevented
        elif isinstance(outcome, Duplicate):
            self.duplicates += 1
        elif isinstance(outcome, Rejected):
            code = outcome.code.value
            self.rejected_by_code[code] = self.rejected_by_code.get(code, 0) + 1
        elif isinstance(outcome, IgnoredInput):
            self.ignored += 1
