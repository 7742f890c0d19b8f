"""In-memory store for a single process: exact, atomic (no await between read and write),
and bounded: each counter expires once it is indistinguishable from a fresh one, and past
`max_keys` live counters the one due to expire first is dropped (as Redis' volatile-ttl
eviction would), so clients sending endless distinct values cannot exhaust memory."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence

from ratelimitd.algorithms import ALGORITHMS, Hit, Outcome, concurrency, evaluate_hits
from ratelimitd.algorithms.base import State
from ratelimitd.storage.clock import Clock, wall_clock_us

# Expired entries removed per apply(): amortises cleanup without long pauses.
_SWEEP_PER_CALL = 16
# Live counters kept at most by default: a few hundred MB at worst.
DEFAULT_MAX_KEYS = 1_000_000


class MemoryStore:
    """Counters in a dict; time from an injectable clock (microseconds)."""

    def __init__(self, clock: Clock = wall_clock_us, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._states: dict[str, tuple[State, int]] = {}  # key -> (state, expires_at_us)
        # One heap entry per live key, possibly stale; re-pushed with the key's real expiry.
        self._expiry: list[tuple[int, str]] = []
        self._slots: dict[str, dict[str, int]] = {}  # concurrency key -> holder -> lease end

    def __len__(self) -> int:
        return len(self._states)

    async def apply(self, hits: Sequence[Hit]) -> list[Outcome]:
        """Evaluate and commit one request's hits; see algorithms.request.evaluate_hits."""
        now = self._clock()
        self._sweep(now)
        outcomes, writes = evaluate_hits(hits, now, self._reader(now), ALGORITHMS)
        for key, (state, ttl_us) in writes.items():
            if key not in self._states:
                heapq.heappush(self._expiry, (now + ttl_us, key))
            self._states[key] = (state, now + ttl_us)
        if len(self._states) > self._max_keys:
            self._evict()
        return outcomes

    async def peek(self, hits: Sequence[Hit]) -> list[Outcome]:
        """What apply(hits) would answer now; commits nothing (and sweeps nothing, so the
        store's contents stay exactly as they were)."""
        now = self._clock()
        return evaluate_hits(hits, now, self._reader(now), ALGORITHMS)[0]

    def _reader(self, now: int) -> Callable[[str], State | None]:
        """A key's live state at `now`; None when absent or expired."""
        states = self._states

        def load(key: str) -> State | None:
            entry = states.get(key)
            return None if entry is None or entry[1] <= now else entry[0]

        return load

    def _sweep(self, now: int) -> None:
        for _ in range(_SWEEP_PER_CALL):
            if not self._expiry or self._expiry[0][0] > now:
                return
            self._drop_first()

    def _evict(self) -> None:
        while len(self._states) > self._max_keys:
            self._drop_first()

    def _drop_first(self) -> None:
        """Drop the counter queued to expire first; one written since it was queued is queued
        again at its real expiry instead."""
        due, key = heapq.heappop(self._expiry)
        entry = self._states.get(key)
        if entry is None:
            return
        if entry[1] > due:
            heapq.heappush(self._expiry, (entry[1], key))
        else:
            del self._states[key]

    async def take_slots(
        self, claims: Sequence[concurrency.Claim], holder: str, lease_us: int
    ) -> concurrency.Taken:
        """Take a slot of every claim for `holder`, or none (algorithms.concurrency)."""
        slots = [self._slots.setdefault(claim.key, {}) for claim in claims]
        taken = concurrency.take(slots, claims, holder, self._clock(), lease_us)
        self._forget_empty(claim.key for claim in claims)
        return taken

    async def renew_slots(self, keys: Sequence[str], holder: str, lease_us: int) -> int:
        """Extend `holder`'s live leases on `keys`; how many were live."""
        slots = [self._slots[key] for key in keys if key in self._slots]
        return concurrency.renew(slots, holder, self._clock(), lease_us)

    async def release_slots(self, keys: Sequence[str], holder: str) -> None:
        """Give `holder`'s slots on `keys` back."""
        concurrency.release([self._slots[key] for key in keys if key in self._slots], holder)
        self._forget_empty(keys)

    def _forget_empty(self, keys: Iterable[str]) -> None:
        for key in keys:
            if not self._slots.get(key, True):
                del self._slots[key]

    async def ping(self) -> bool:
        """Always reachable."""
        return True

    async def close(self) -> None:
        """Nothing to release."""
