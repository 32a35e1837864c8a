"""Figures: progress lines, percentiles and medians, verdicts against targets, and tables."""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Sequence

__all__ = ["Figures", "median_figures", "percentile", "say", "spread_ms", "table", "verdict"]

# One phase's figures by name; --repeat takes the median of each.
Figures = dict[str, float]


def say(text: str) -> None:
    """Progress, on stderr: stdout is the summary's."""
    print(text, file=sys.stderr, flush=True)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of unsorted values; nan when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]


def spread_ms(
    seconds: Sequence[float], prefix: str = "", points: Sequence[int] = (50, 90, 99), top: bool = True
) -> Figures:
    """Percentiles of durations in seconds, as milliseconds named `<prefix>p50` and so on, then
    (with `top`) `<prefix>max`; nan where there are none."""
    figures = {f"{prefix}p{p}": percentile(seconds, p) * 1000 for p in points}
    if top:
        figures[f"{prefix}max"] = max(seconds, default=float("nan")) * 1000
    return figures


def median_figures(runs: list[Figures]) -> Figures:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    if value != value:  # nan
        return "n/a"
    if higher_is_better:
        return "met" if value >= target else f"MISSED by {(target - value) / target:.0%}"
    return "met" if value < target else f"MISSED: {value / target:.1f}x the target"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> None:
    """Print columns padded to their widest cell, two spaces apart; the columns in `right`
    aligned right (numbers), the last one not padded (notes)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells[:-1], widths, strict=True))
        ]
        return "  ".join([*padded, cells[-1]]).rstrip()

    print(line(header))
    print("-" * (sum(widths) + 2 * len(widths) + len(header[-1])))
    for r in rows:
        print(line(r))
