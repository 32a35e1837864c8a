"""A session's usage over a window of event time (CONTRACT section 12), pure: the one function
that defines it, fed by the ledger's history (service/ledger/history.py) or, in the property
tests, by a fold of the replayed records.

A counted connection is one whose create was applied (not prevented, not after its tombstone).
It lasts from its create's `timestamp` to its destroy's `timestamp`, or without end while it
is live. Events arrive out of order, so a destroy may carry an earlier timestamp than its
create: the connection then lasted no time at all (its end is taken as its start).

Over the window `[start, end)`:

- `connections`: the counted connections that were there at some moment of the window: a
  life `[s, e)` that shares an instant with it (`max(s, start) < min(e, end)`); a life of no
  length, `s == e`, is the instant `s` and is there when `start <= s < end`. An empty window
  (`start == end`) has no instant, and no connection;
- `connectionMilliseconds`: the sum of their lives clipped to the window;
- `byReason`: those of them whose destroy falls inside the window (`e < end`), by the
  destroy's reason; `open`: the others, still there when the window ends. So
  `connections == sum(byReason) + open`;
- `peak`: the most of them there at one instant, and the first instant it was reached (an
  instant `t` holds the lives with `s <= t < e`, and those of no length at `t`); a window with
  none has a peak of 0 at no time (null).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["UNKNOWN_REASON", "Life", "usage"]

# A destroy that carried no reason (one appended before reasons were required, say).
UNKNOWN_REASON: Final = "unknown"


@dataclass(frozen=True, slots=True)
class Life:
    """One counted connection: its create's timestamp, and its destroy's timestamp and reason
    (None while it is live)."""

    start: int
    end: int | None
    reason: str | None


def usage(session_id: str, lives: Iterable[Life], start: int, end: int) -> dict[str, Any]:
    """The usage body of `session_id` over `[start, end)` from its counted connections."""
    connections = 0
    milliseconds = 0
    still_open = 0
    by_reason: Counter[str] = Counter()
    # (time, change) for the sweep that finds the peak: +1 from a life's first instant in the
    # window, -1 at its end; a life of no length counts at its instant only.
    changes: list[tuple[int, int]] = []
    instants: Counter[int] = Counter()
    for life in lives:
        s = life.start
        e = life.end if life.end is None or life.end >= s else s
        if e is not None and e == s:
            if not start <= s < end:
                continue
            instants[s] += 1
        else:
            first, last = max(s, start), end if e is None else min(e, end)
            if first >= last:
                continue
            milliseconds += last - first
            changes.append((first, 1))
            if e is not None and e < end:
                changes.append((e, -1))
        connections += 1
        if e is not None and e < end:
            by_reason[life.reason or UNKNOWN_REASON] += 1
        else:
            still_open += 1
    peak, peak_at = _peak(changes, instants)
    return {
        "sessionId": session_id,
        "from": start,
        "to": end,
        "peak": {"count": peak, "timestamp": peak_at},
        "connectionMilliseconds": milliseconds,
        "connections": connections,
        "byReason": dict(sorted(by_reason.items())),
        "open": still_open,
    }


def _peak(changes: list[tuple[int, int]], instants: Counter[int]) -> tuple[int, int | None]:
    """The most lives at one instant and the first instant with that many. At one time, ends
    come before starts (`[s, e)`: a life ending at t is not there at t)."""
    times = sorted({t for t, _ in changes} | set(instants))
    by_time: dict[int, int] = {}
    for t, change in changes:
        by_time[t] = by_time.get(t, 0) + change
    running = 0
    peak, peak_at = 0, None
    for t in times:
        running += by_time.get(t, 0)
        there = running + instants.get(t, 0)
        if there > peak:
            peak, peak_at = there, t
    return peak, peak_at
