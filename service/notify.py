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

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 - returns quietly at the timeout
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
