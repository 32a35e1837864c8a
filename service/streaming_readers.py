"""A cap on the clients that stream history at once (`GET /v1/events`, `GET /v1/rejected`, SSE
streams, NATS `ledger.replay`), LEDGER_MAX_STREAMING_READERS.

A streaming read holds no database connection while its client is slow (see
ledger/store.py), but each one still holds a page of records in memory and, while it reads,
a connection of the readers' pool. Past the cap a new reader is refused at once, with a
hint to come back (HTTP `503` with `Retry-After`, a NATS replay's end marker with
`Ledger-Replay-Error: busy`), rather than queued behind clients that may never read."""

from __future__ import annotations

from service.metrics import Metrics

__all__ = ["RETRY_AFTER_SECONDS", "StreamingReaders"]

# What a refused reader is told to wait before it tries again.
RETRY_AFTER_SECONDS = 2


class StreamingReaders:
    def __init__(self, limit: int, metrics: Metrics | None = None) -> None:
        self.limit = limit
        self.active = 0
        self.metrics = metrics

    def try_take(self, edge: str) -> bool:
        """Take a place for one streaming reader, if there is one; `edge` names the route or
        subject in the refusal metric. Every place taken is given back with `give_back`."""
        if self.active >= self.limit:
            if self.metrics is not None:
                self.metrics.streaming_refused.labels(edge).inc()
            return False
        self.active += 1
        if self.metrics is not None:
            self.metrics.streaming_readers.set(self.active)
        return True

    def give_back(self) -> None:
        self.active -= 1
        if self.metrics is not None:
            self.metrics.streaming_readers.set(self.active)

    def refusal(self) -> str:
        return (
            f"{self.limit} clients are streaming already (LEDGER_MAX_STREAMING_READERS); "
            f"try again in {RETRY_AFTER_SECONDS} s"
        )
