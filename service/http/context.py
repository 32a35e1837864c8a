"""What the HTTP edge is given by the composition root: the ledger's objects, the commit
signal, the live counts, where accepted events go, the readiness check and the AsyncAPI
document. The edge reaches NATS and the AsyncAPI builder only through these, so that it imports
neither."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from service.commit_signal import CommitSignal
from service.pipeline.ledger_service import LedgerService
from service.pipeline.live_counts import LiveCounts

__all__ = ["Forwarder", "HttpContext"]


class Forwarder(Protocol):
    """Where accepted events go: the CONNECTIONS stream (the composition root hands in the NATS
    edge's publisher). `publish` returns once every message is stored, and raises
    TransientError otherwise."""

    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> None: ...


@dataclass(slots=True)
class HttpContext:
    ledger: LedgerService
    committed: CommitSignal
    counts: LiveCounts
    # None: this instance takes no writes (no NATS); POSTs are answered 503.
    publisher: Forwarder | None
    # Each readiness check's reason for failing, or None when it passes.
    ready: Callable[[], Awaitable[dict[str, str | None]]]
    # The AsyncAPI document of the NATS interface, served at /docs/asyncapi.
    asyncapi: Callable[[], dict[str, Any]]
