"""A circuit breaker in front of a store: after `threshold` consecutive failures it stops
calling the store for `cooldown_s`, so every request is answered at once by the failure
modes instead of each waiting out the store's timeout; then one probe request at a time
is let through, and the first success closes it again. The wrapped store reconnects by
itself, so recovery needs no restart."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence

import structlog

from ratelimitd.algorithms import Hit, Outcome
from ratelimitd.observer import NO_OBSERVER, Observer
from ratelimitd.storage.base import Store, StoreError

log = structlog.get_logger(__name__)


class BreakerState(enum.Enum):
    """Closed: calls go through. Open: calls fail at once. Half-open: one probe goes through."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """A Store that guards another; reports its state changes to `observer`."""

    def __init__(
        self,
        store: Store,
        *,
        threshold: int = 5,
        cooldown_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self.store = store
        self._observer = observer
        self._threshold = threshold
        self._cooldown_s = cooldown_s
        self._clock = clock
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._open_until = 0.0
        self._probing = False

    async def apply(self, hits: Sequence[Hit]) -> list[Outcome]:
        """The store's answer, or StoreError at once while the circuit is open."""
        if self.state is not BreakerState.CLOSED:
            if self._probing or self._clock() < self._open_until:
                raise StoreError(f"store circuit {self.state.value}: not calling the store")
            self._set(BreakerState.HALF_OPEN)
            self._probing = True
        try:
            outcomes = await self.store.apply(hits)
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
        return outcomes

    async def peek(self, hits: Sequence[Hit]) -> list[Outcome]:
        """The store's dry run, or StoreError at once unless the circuit is closed. A peek
        neither probes nor counts towards opening or closing the circuit: an operator's
        inspection must not change how live traffic is treated."""
        if self.state is not BreakerState.CLOSED:
            raise StoreError(f"store circuit {self.state.value}: not calling the store")
        return await self.store.peek(hits)

    def _set(self, state: BreakerState) -> None:
        if state is not self.state:
            log.warning("store_circuit", state=state.value, previous=self.state.value)
            self._observer.circuit(state.value)
            self.state = state

    async def ping(self) -> bool:
        """Whether the store itself answers (the breaker does not gate health checks)."""
        return await self.store.ping()

    async def close(self) -> None:
        """Close the guarded store."""
        await self.store.close()
