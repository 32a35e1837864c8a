"""What the hooks decided for one event, as its ledger row records it: made by the hooks,
stored by the ledger, carried between them by the pipeline."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ALLOWED", "Decision", "HookFailure"]


@dataclass(frozen=True, slots=True)
class HookFailure:
    hook: str
    error: str

    def as_dict(self) -> dict[str, str]:
        return {"hook": self.hook, "error": self.error}


@dataclass(frozen=True, slots=True)
class Decision:
    """What the hooks decided for one event; stored on its ledger row."""

    prevented: bool = False
    prevented_by: str | None = None
    failures: tuple[HookFailure, ...] = ()


ALLOWED = Decision()
