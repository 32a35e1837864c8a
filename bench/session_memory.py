"""Memory per active session of the in-memory counts (service/pipeline/live_counts.py): the
count query's copy holds one entry a session with connections. Measured with tracemalloc, for
session ids of the length Vonage Video uses (about 72 characters) and for short ones, against
an empty copy as the baseline.

    .venv/bin/python bench/session_memory.py
"""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.pipeline.live_counts import LiveCounts

SESSIONS = (10_000, 100_000, 1_000_000)


def _session_id(n: int, long: bool) -> str:
    # A Vonage Video session id: "1_MX4..." base64-ish, 72 characters or so.
    return f"1_MX40NzM2NTQ1MX5-MTcz{n:012d}NzAwMDB-ZmFrZVNlc3Npb25JZH5-fg" if long else f"room-{n}"


def measure(sessions: int, long: bool) -> float:
    """Bytes a session, over the copy's empty size."""
    counts = LiveCounts.__new__(LiveCounts)  # the copy alone: no engine, nothing started
    counts._counts = {}
    ids = [_session_id(n, long) for n in range(sessions)]  # built before: a copy owns its keys
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for n, session in enumerate(ids):
        # Keys as the service gets them: a string of its own, decoded from a record.
        counts._counts[session.encode().decode()] = n % 50 + 1
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / sessions


def main() -> None:
    print(f"{'sessions':>10}  {'id length':>9}  {'bytes a session':>15}  {'MB in all':>9}")
    for sessions in SESSIONS:
        for long in (True, False):
            per = measure(sessions, long)
            length = len(_session_id(0, long))
            print(f"{sessions:>10,}  {length:>9}  {per:>15.0f}  {per * sessions / 1e6:>9.1f}")


if __name__ == "__main__":
    main()
