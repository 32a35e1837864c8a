"""A broadcast "the ledger moved" signal inside one process: the ingest loop rings it after each
commit, and the relay and waiting queries wake on it. Other instances' commits are seen by
polling, so a missed ring only costs latency, never correctness."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["CommitSignal"]


class CommitSignal:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def ring(self) -> None:
        # Wake everyone waiting now, then re-arm for the next commit.
        self._event.set()
        self._event = asyncio.Event()

    def armed(self) -> asyncio.Event:
        """The event the next ring sets. A waiter that looks at the ledger and then sleeps takes
        this *before* it looks, and passes it to `wait`: a ring that comes while it looks then
        ends the sleep at once instead of being missed until the timeout."""
        return self._event

    async def wait(self, timeout: float, armed: asyncio.Event | None = None) -> None:  # noqa: ASYNC109 - returns quietly at the timeout
        event = armed if armed is not None else self._event
        if event.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
