"""The interface every store implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ratelimitd.algorithms import Hit, Outcome
from ratelimitd.algorithms.concurrency import Claim, Taken


class StoreError(Exception):
    """The store could not answer (unreachable, timed out, or failed); rules' failure modes
    decide instead."""


class Store(Protocol):
    """Applies one request's hits atomically and all-or-nothing (see algorithms.request)."""

    async def apply(self, hits: Sequence[Hit]) -> list[Outcome]:
        """Evaluate and, if the request is admitted, commit `hits`; raise StoreError on failure."""
        ...

    async def peek(self, hits: Sequence[Hit]) -> list[Outcome]:
        """What apply(hits) would answer right now, without changing any state (explain's
        dry run); raise StoreError on failure."""
        ...

    async def ping(self) -> bool:
        """True when the store can answer right now."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class SlotStore(Protocol):
    """A store that also keeps concurrency slots (memory, one Redis server or Sentinel's
    master; Redis Cluster does not): leased, renewed while a request runs, released when it
    ends (algorithms.concurrency). Each call is one round trip; StoreError on failure."""

    async def take_slots(self, claims: Sequence[Claim], holder: str, lease_us: int) -> Taken:
        """Take a slot of every claim for `holder`, or none if one is full."""
        ...

    async def renew_slots(self, keys: Sequence[str], holder: str, lease_us: int) -> int:
        """Extend `holder`'s live leases on `keys`; how many were live."""
        ...

    async def release_slots(self, keys: Sequence[str], holder: str) -> None:
        """Give `holder`'s slots on `keys` back."""
        ...
