"""What every algorithm provides (its math on one counter's state), and the hits and outcomes
of a request. How a request's hits together become its answer is algorithms.request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from ratelimitd.model.rules import Limit

State = object


class Evaluation(NamedTuple):
    """The result of offering `cost` to one counter at one instant."""

    admitted: bool
    state: State | None  # the state to store when the hit is committed; None: unchanged
    remaining: int  # whole units left (after the cost when admitted)
    reset_us: int  # admitted: until the counter is fully reset; else until `cost` could pass
    ttl_us: int  # how long the stored state matters; afterwards it equals a fresh counter


Evaluate = Callable[[State | None, int, Limit, int], Evaluation]


@dataclass(frozen=True, slots=True)
class Algorithm:
    """A rate limiting strategy: its config name, the tag it puts in store keys, its math, and
    whether `burst` means anything to it."""

    name: str
    key_tag: str
    evaluate: Evaluate
    uses_burst: bool


class Hit(NamedTuple):
    """One counter a request touches: store key, limit, cost, whether it only observes
    (`shadow`: it never rejects the request) and whether it is a quota (`quota`: it rejects
    the request only together with every other quota hit of it; algorithms.request)."""

    key: str
    limit: Limit
    cost: int
    shadow: bool = False
    quota: bool = False


class Outcome(NamedTuple):
    """What one hit got: admitted by its own limit, remaining units and time to reset."""

    admitted: bool
    remaining: int
    reset_us: int
