"""Clocks: the store's notion of now, in integer microseconds since the Unix epoch."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]


def wall_clock_us() -> int:
    """The machine's wall clock in microseconds (windows align to the epoch, so not monotonic)."""
    return time.time_ns() // 1_000


class FakeClock:
    """A clock that moves only when told to; for tests and simulations."""

    def __init__(self, start_us: int = 1_700_000_000_000_000) -> None:
        self.now_us = start_us

    def __call__(self) -> int:
        return self.now_us

    def advance(self, seconds: float = 0.0, *, us: int = 0) -> None:
        """Move time forward by `seconds` plus `us` microseconds."""
        self.now_us += round(seconds * 1_000_000) + us
