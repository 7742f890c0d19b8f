"""The interface every store implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ratelimitd.algorithms import Hit, Outcome


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
