"""Concurrency limits: how many requests may hold a slot of one key at once. Pure functions over
the holders of each key (the memory store's state); lua/concurrency.lua is their twin on Redis.

Invariants, for every key:
- a holder is one request (a unique id); it holds its slot until it releases it or its lease
  (an expiry time) passes unrenewed, so a worker that dies holding slots loses them a lease
  later;
- live holders never exceed the capacity after a take: a take that would exceed the capacity
  of any of its keys takes nothing at all (all-or-nothing, as rate limits).
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from typing import NamedTuple

# holder id -> lease expiry (us)
Holders = MutableMapping[str, int]


class Claim(NamedTuple):
    """A slot wanted: the key of a concurrency limit and its capacity."""

    key: str
    capacity: int


class Taken(NamedTuple):
    """The answer to a take: whether every slot was taken, and per claim the requests in
    flight (this one included when taken)."""

    admitted: bool
    in_flight: tuple[int, ...]


def live(holders: Holders, now_us: int) -> int:
    """Drop the holders whose lease has passed; the number left."""
    for holder in [h for h, expiry in holders.items() if expiry <= now_us]:
        del holders[holder]
    return len(holders)


def take(
    slots: Sequence[Holders], claims: Sequence[Claim], holder: str, now_us: int, lease_us: int
) -> Taken:
    """Take a slot of every claim for `holder` (slots[i] holds claim i's key), or none if one
    is full."""
    counts = [live(held, now_us) - (holder in held) for held in slots]
    if any(n >= claim.capacity for n, claim in zip(counts, claims, strict=True)):
        return Taken(False, tuple(counts))
    for held in slots:
        held[holder] = now_us + lease_us
    return Taken(True, tuple(n + 1 for n in counts))


def renew(slots: Sequence[Holders], holder: str, now_us: int, lease_us: int) -> int:
    """Extend `holder`'s leases that are still live; how many were."""
    renewed = 0
    for held in slots:
        if held.get(holder, 0) > now_us:
            held[holder] = now_us + lease_us
            renewed += 1
    return renewed


def release(slots: Sequence[Holders], holder: str) -> None:
    """Give `holder`'s slots back."""
    for held in slots:
        held.pop(holder, None)
