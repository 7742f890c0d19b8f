"""The time bins of `ratelimitd simulate --plot`: their automatic width, and counting into them."""

from __future__ import annotations

import math
from collections.abc import Iterable

from ratelimitd.core.headers import US_PER_S

# The automatic plot bin keeps a plot to at most this many bins; --bin to this many.
MAX_BINS = 100
MAX_PLOT_BINS = 10_000
# Bin widths the automatic choice picks from (seconds); past the last, whole days.
_BIN_WIDTHS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200)
_DAY_US = 86_400 * US_PER_S


def auto_bin_us(duration_us: int) -> int:
    """A plot bin: one second, or the shortest round width keeping to MAX_BINS bins."""
    for seconds in _BIN_WIDTHS_S:
        if duration_us // (seconds * US_PER_S) < MAX_BINS:
            return seconds * US_PER_S
    return math.ceil((duration_us + 1) / (MAX_BINS * _DAY_US)) * _DAY_US


def binned(times_us: Iterable[int], bin_us: int, bins: int) -> list[int]:
    """How many of `times_us` fall in each of `bins` bins of `bin_us` from 0."""
    counts = [0] * bins
    for t_us in times_us:
        counts[t_us // bin_us] += 1
    return counts
