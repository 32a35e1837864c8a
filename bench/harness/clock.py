"""One clock for every process of a benchmark."""

from __future__ import annotations

import time

__all__ = ["now"]


def now() -> float:
    """CLOCK_MONOTONIC on Linux: timestamps taken in different processes compare."""
    return time.perf_counter()
