"""Keys known to be over their limit, answered without the store until they can pass again.

Exact: a counter that rejected cost c at time t, with reset r, cannot admit cost >= c before
t + r (other clients can only consume, never refill it faster). The deadline is measured
from when the request was *sent*, on this process's monotonic clock, so store latency and
clock skew between machines only make an entry expire early, never late.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple


def monotonic_us() -> int:
    """This process's monotonic clock in microseconds."""
    return time.monotonic_ns() // 1_000


class Cached(NamedTuple):
    """A locally answered rejection: what the counter had left, and time until it may pass."""

    remaining: int
    reset_us: int


class OverLimitCache:
    """A bounded LRU of over-limit keys: key -> (deadline, smallest rejected cost, remaining)."""

    def __init__(self, max_entries: int, clock: Callable[[], int] = monotonic_us) -> None:
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[int, int, int]] = OrderedDict()
        self.clock = clock
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: str, cost: int, now: int) -> Cached | None:
        """The cached rejection of `cost` on `key` at `now`, if there is one."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        deadline, rejected_cost, remaining = entry
        if now >= deadline:
            del self._entries[key]
            return None
        if cost < rejected_cost:
            return None  # a smaller cost may already pass: ask the store
        self._entries.move_to_end(key)
        self.hits += 1
        return Cached(remaining, deadline - now)

    def record(self, key: str, cost: int, remaining: int, reset_us: int, sent_at: int) -> None:
        """Remember that `cost` on `key` was rejected by a request sent at `sent_at`."""
        self._entries[key] = (sent_at + reset_us, cost, remaining)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
