"""`minPosition`: make a query wait until the projection reflects a position, for a while."""

from __future__ import annotations

import asyncio

from service.notify import CommitSignal
from service.projections.queries import ProjectionQueries

__all__ = ["wait_for_position"]


async def wait_for_position(
    queries: ProjectionQueries, committed: CommitSignal, position: int | None, max_wait: float
) -> None:
    """Return once the projection is at `position` or later, or after `max_wait` seconds: the
    answer then carries the position it did reach, which says how far it got."""
    if not position:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait
    while await queries.head() < position:
        left = deadline - loop.time()
        if left <= 0:
            return
        # Woken by this process's commits; polls for other instances' every 50 ms.
        await committed.wait(min(left, 0.05))
