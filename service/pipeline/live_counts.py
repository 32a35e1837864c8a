"""Every session's connection count, in memory, following the ledger: the answer to the count
query without a database round trip.

The copy is exact as of `position`, which every answer carries (CONTRACT section 4: `position`
is the head the answer reflects). It is kept current two ways:

- This process's own commits are applied the moment they commit: the pipeline hands each
  committed batch over (`on_commit`) with each appended record's session and count after it.
  When the batch follows straight on from `position`, the copy takes it and moves on.
- Anything else, a batch from another instance, or one of ours that came after another
  instance's, is read from the ledger itself by the follower: the rows after `position`, in
  position order, each carrying its session's count after it (`count_after`). Positions are
  gap-free and in commit order, so reading "after `position`" never skips a commit.

Counts are absolute values, not deltas: applying a record twice is harmless, which is what lets
the follower and `on_commit` overlap without a lock. A count query waits (briefly) for records
this process has seen committed but not yet applied, so an instance never answers with less than
it has itself written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.commit_signal import CommitSignal
from service.errors import TransientError
from service.ledger.append import CHECKPOINT
from service.ledger.store import transient_errors
from service.pipeline.outcomes import BatchResult

__all__ = ["LiveCounts"]

log = logging.getLogger(__name__)

TAIL_CHUNK = 10_000
_CHECKPOINT = text("SELECT position FROM projection_checkpoints WHERE name = :checkpoint")
_ACTIVE = text("SELECT session_id, count FROM projection_sessions WHERE count > 0")
_TAIL = text(
    "SELECT position, session_id, count_after FROM connection_ledger "
    "WHERE position > :after ORDER BY position LIMIT :limit"
)


class LiveCounts:
    def __init__(self, engine: AsyncEngine, *, poll_interval: float) -> None:
        self.engine = engine
        self.poll_interval = poll_interval
        self.position = 0
        self._counts: dict[str, int] = {}
        # The highest position this process knows to be committed; the copy owes it until
        # `position` gets there.
        self._owed = 0
        self._advanced = CommitSignal()
        self._wake = CommitSignal()
        self._stopping = False
        self._loaded = asyncio.Event()
        # When this process's own commit last moved the copy on (time.monotonic()).
        self._own_commit_at = float("-inf")
        self.reads = 0  # looks at the ledger (tests count them)

    def __len__(self) -> int:
        return len(self._counts)

    async def load(self) -> None:
        """Read every active session's count and the position they reflect, in one snapshot."""
        options: dict[str, Any] = (
            {"isolation_level": "REPEATABLE READ"} if self.engine.dialect.name == "postgresql" else {}
        )
        with transient_errors():
            async with self.engine.connect() as connection:
                connection = await connection.execution_options(**options)
                async with connection.begin():
                    # On SQLite the snapshot starts at the first read of the transaction; on
                    # PostgreSQL at the first statement under REPEATABLE READ. Either way both
                    # reads below see the same committed state.
                    position = (await connection.execute(_CHECKPOINT, {"checkpoint": CHECKPOINT})).scalar()
                    rows = (await connection.execute(_ACTIVE)).all()
        self._counts = {session_id: int(count) for session_id, count in rows}
        self.position = int(position or 0)
        self._loaded.set()
        self._advanced.ring()

    def on_commit(self, result: BatchResult) -> None:
        """Called by the pipeline right after a batch of this process committed."""
        if result.head > self._owed:
            self._owed = result.head
        changes = result.changes
        if self._loaded.is_set() and changes and changes[0][0] == self.position + 1:
            self._apply(changes)
            self._own_commit_at = time.monotonic()
        elif self.position < self._owed:
            self._wake.ring()  # someone else's records came first: the follower reads them

    def notice(self, head: int) -> None:
        """Another process announced the ledger's head (`ledger.head`): read up to it now
        rather than at the next poll."""
        if head > self.position:
            self._wake.ring()

    def _apply(self, changes: Iterable[tuple[int, str, int]]) -> None:
        counts = self._counts
        position = self.position
        for at, session_id, count in changes:
            if at <= position:
                continue  # already applied by the other path
            if at != position + 1:
                break  # a gap: the follower fills it from the ledger
            if count:
                counts[session_id] = count
            else:
                counts.pop(session_id, None)
            position = at
        if position != self.position:
            self.position = position
            self._advanced.ring()

    def _commits_flow(self) -> bool:
        """True while this process's own commits arrive gap-free, the last one within a poll
        interval. Another writer's commit then shows as a gap at our next commit, which rings
        the follower (`on_commit`): a poll would only read nothing, on the event loop that
        answers the count queries."""
        return self.position >= self._owed and time.monotonic() - self._own_commit_at < self.poll_interval

    async def _catch_up(self) -> None:
        self.reads += 1
        while True:
            with transient_errors():
                async with self.engine.connect() as connection:
                    rows = (
                        await connection.execute(_TAIL, {"after": self.position, "limit": TAIL_CHUNK})
                    ).all()
            self._apply((int(at), session_id, int(count)) for at, session_id, count in rows)
            if len(rows) < TAIL_CHUNK:
                return

    async def run(self) -> None:
        """Follow the ledger until `stop`: at once when this process's commits or a waiting
        query ask for it, and every `poll_interval` for other instances' commits."""
        delay = self.poll_interval
        rung = True
        while not self._stopping:
            # Taken before the read: a ring while the read is in flight ends the sleep at once.
            woken = self._wake.armed()
            try:
                if not self._loaded.is_set():
                    await self.load()
                if rung or not self._commits_flow():
                    await self._catch_up()
                delay = self.poll_interval
            except TransientError as error:
                delay = min(max(delay * 2, 0.2), 5.0)
                log.warning("count follower paused for %.1f s: %s", delay, error)
            except Exception:
                # A bug here must not stop the counts for good: log it, step back, read again.
                delay = 5.0
                log.exception("count follower failed; reading the ledger again in %.0f s", delay)
            if not self._stopping:
                await self._wake.wait(delay, woken)
                rung = woken.is_set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.ring()

    async def wait_for(self, position: int, max_wait: float) -> None:
        """Return once the copy reflects `position`, or after `max_wait` seconds."""
        if self.position >= position:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        while self.position < position:
            left = deadline - loop.time()
            if left <= 0:
                return
            armed = self._advanced.armed()
            self._wake.ring()
            await self._advanced.wait(left, armed)

    def count_now(self, session_id: str) -> dict[str, Any] | None:
        """The answer `count(session_id, None, ...)` would give, if it can be given without
        waiting (loaded, and up to this process's own commits); otherwise None."""
        if not self._loaded.is_set() or self.position < self._owed:
            return None
        return {"sessionId": session_id, "count": self._counts.get(session_id, 0), "position": self.position}

    async def count(self, session_id: str, min_position: int | None, max_wait: float) -> dict[str, Any]:
        """`{"sessionId", "count", "position"}` as of at least `min_position` (within `max_wait`)
        and at least every commit this process has made."""
        if not self._loaded.is_set():
            try:
                await asyncio.wait_for(self._loaded.wait(), max_wait)
            except TimeoutError:
                raise TransientError("the counts are not loaded yet: the database is unavailable") from None
        wanted = max(min_position or 0, self._owed)
        if self.position < wanted:
            await self.wait_for(wanted, max_wait)
        return {"sessionId": session_id, "count": self._counts.get(session_id, 0), "position": self.position}
