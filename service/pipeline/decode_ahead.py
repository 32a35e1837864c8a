"""Decoding the next batch while the one before it commits, for every edge that has a backlog
(NATS ingest, `connledger import`).

Decoding is Python on the event loop's thread; a commit is mostly the database's work (its
thread or process). So while one batch commits, the next is read and decoded. Commits stay
one at a time and in arrival order: a batch's commit starts only after the one before it has
finished, and an edge acknowledges or reports a batch only once its own commit has returned.

Not with hooks: `Pipeline.prepare` then runs them on the events it does not find in the
ledger, so it must see every batch before it committed (a copy of one of its events would
otherwise run the hooks again); edges with hooks commit each batch before preparing the next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

__all__ = ["CommitBehind"]

T = TypeVar("T")


class CommitBehind(Generic[T]):
    """At most one commit in flight, behind the decoding of the next batch."""

    def __init__(self) -> None:
        self._in_flight: asyncio.Task[T] | None = None

    @property
    def committing(self) -> bool:
        return self._in_flight is not None

    async def wait(self) -> T | None:
        """The commit in flight, finished: its result (its error raised), or None when no
        commit was in flight."""
        task, self._in_flight = self._in_flight, None
        return None if task is None else await task

    async def then(self, commit: Coroutine[Any, Any, T]) -> T | None:
        """Wait for the commit in flight, then start `commit` (the next batch's, decoded in the
        meantime) and return at once with the result of the one before (None if none)."""
        try:
            previous = await self.wait()
        except BaseException:
            commit.close()  # never started: nothing of it ran
            raise
        self._in_flight = asyncio.create_task(commit)
        return previous

    async def settle(self) -> None:
        """After a failure elsewhere: let the commit in flight finish (or fail) rather than be
        abandoned halfway, and mark its outcome as seen. Its result is not wanted then."""
        task, self._in_flight = self._in_flight, None
        if task is None:
            return
        if not task.done():
            await asyncio.wait([task])
        if not task.cancelled():
            task.exception()
