"""A circuit breaker on a store's round trips: after `threshold` consecutive failed round
trips it stops calling the store for `cooldown_s`, so every request is answered at once by
the failure modes instead of each waiting out the store's timeout; then one probe round
trip at a time is let through, and the first success closes it again. The store reconnects
by itself, so recovery needs no restart.

It guards round trips (one batch of requests each), not requests: a failed batch is one
failure however many requests it carried, and the per-request path pays nothing for it.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from ratelimitd.model.observer import NO_OBSERVER, Observer
from ratelimitd.storage.base import StoreError

log = structlog.get_logger(__name__)

T = TypeVar("T")


class BreakerState(enum.Enum):
    """Closed: calls go through. Open: calls fail at once. Half-open: one probe goes through."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Guards the round trips of one store (see `guard`); reports its state changes to
    `observer`."""

    def __init__(
        self,
        *,
        threshold: int = 5,
        cooldown_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self._threshold = threshold
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._observer = observer
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._open_until = 0.0
        self._probing = False

    async def call(self, round_trip: Callable[[], Awaitable[T]]) -> T:
        """`round_trip()`'s answer, or StoreError at once while the circuit is open (or a
        probe is out)."""
        if self.state is not BreakerState.CLOSED:
            if self._probing or self._clock() < self._open_until:
                raise StoreError(f"store circuit {self.state.value}: not calling the store")
            self._set(BreakerState.HALF_OPEN)
            self._probing = True
        try:
            answer = await round_trip()
        except StoreError:
            self._failures += 1
            if self.state is BreakerState.HALF_OPEN or self._failures >= self._threshold:
                self._open_until = self._clock() + self._cooldown_s
                self._set(BreakerState.OPEN)
            raise
        finally:
            self._probing = False
        self._failures = 0
        if self.state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)
        return answer

    def check_closed(self) -> None:
        """StoreError unless the circuit is closed: for calls that must neither probe nor
        count (explain's dry runs: an operator's inspection must not change how live
        traffic is treated)."""
        if self.state is not BreakerState.CLOSED:
            raise StoreError(f"store circuit {self.state.value}: not calling the store")

    def _set(self, state: BreakerState) -> None:
        if state is not self.state:
            log.warning("store_circuit", state=state.value, previous=self.state.value)
            self._observer.circuit(state.value)
            self.state = state
