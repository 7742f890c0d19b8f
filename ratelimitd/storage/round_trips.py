"""What the Redis stores share: requests go to the server in round trips, batched per
event-loop tick, guarded by the circuit breaker and reported to the observer; a peek (a dry
run) is never batched."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Coroutine, Sequence
from typing import Any

from ratelimitd.algorithms import Hit, Outcome
from ratelimitd.model.observer import Observer
from ratelimitd.storage.batching import TickBatcher, observed
from ratelimitd.storage.breaker import CircuitBreaker


class RoundTripStore(ABC):
    """A store whose subclass sends a list of requests to the server in one round trip
    (`_send`); this class decides when, and counts and guards each."""

    def __init__(self, *, batch: bool, observer: Observer, breaker: CircuitBreaker | None) -> None:
        self._breaker = breaker
        # Round trips that reach Redis are counted; those the breaker refuses are not.
        self._sent = observed(self._send, observer)
        self._batcher = TickBatcher(self._round_trip) if batch else None

    def apply(self, hits: Sequence[Hit]) -> Coroutine[Any, Any, list[Outcome]]:
        """Evaluate and commit one request's hits; raise StoreError on failure."""
        # The batcher's coroutine itself, not one wrapping it: one frame less per request.
        if self._batcher is not None:
            return self._batcher.submit(hits)
        return self._apply_alone(hits)

    async def _apply_alone(self, hits: Sequence[Hit]) -> list[Outcome]:
        return (await self._round_trip([hits]))[0]

    async def peek(self, hits: Sequence[Hit]) -> list[Outcome]:
        """What apply(hits) would answer now, from a dry run of the same script calls (a
        request spanning Cluster slots gets the answer a single Redis would give); raise
        StoreError on failure."""
        if self._breaker is not None:
            self._breaker.check_closed()
        # Never batched: a dry run cannot share a call with requests that must commit.
        return (await self._send([hits], dry_run=True))[0]

    async def _round_trip(self, requests: list[Sequence[Hit]]) -> list[list[Outcome]]:
        if self._breaker is None:
            return await self._sent(requests)
        return await self._breaker.call(lambda: self._sent(requests))

    @abstractmethod
    async def _send(
        self, requests: list[Sequence[Hit]], dry_run: bool = False
    ) -> list[list[Outcome]]:
        """One outcome list per request, from one round trip; StoreError on failure."""
