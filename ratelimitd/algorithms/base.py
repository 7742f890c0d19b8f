"""What every algorithm provides, and the all-or-nothing evaluation of one request's hits.

This is the pure arithmetic behind both stores: the memory store calls it directly and
lua/request.lua performs the same steps, in the same order and with the same floating-point
operations, inside Redis. Invariants that both keep:

- A request is admitted only if every non-shadow hit is admitted; when it is not, it
  consumes nothing from limits without overdraft.
- A limit with overdraft keeps every charge, past its limit too and whatever the request's
  other limits answer: it meters usage that has already happened (a charge Envoy sends after
  the response), so dropping a charge would let usage go unpaid.
- Hits on the same key within one request see each other's consumption, in request order.
- A cost of 0 never changes state: it asks whether a cost of 1 would pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    """One counter a request touches: store key, limit, cost, and whether it only observes."""

    key: str
    limit: Limit
    cost: int
    shadow: bool = False


class Outcome(NamedTuple):
    """What one hit got: admitted by its own limit, remaining units and time to reset."""

    admitted: bool
    remaining: int
    reset_us: int


def evaluate_hits(
    hits: Sequence[Hit],
    now_us: int,
    load: Callable[[str], State | None],
    algorithms: dict[str, Algorithm],
) -> tuple[list[Outcome], dict[str, tuple[State, int]]]:
    """Evaluate one request's hits all-or-nothing.

    Returns one outcome per hit and the writes to commit as {key: (state, ttl_us)}: when the
    request is rejected, only the charges of limits with overdraft.
    """
    loaded: dict[str, State | None] = {}
    staged: dict[str, tuple[State, int]] = {}
    tentative: list[Evaluation] = []
    rejected = False
    for hit in hits:
        if hit.key in staged:
            state: State | None = staged[hit.key][0]
        else:
            if hit.key not in loaded:
                loaded[hit.key] = load(hit.key)
            state = loaded[hit.key]
        result = algorithms[hit.limit.algorithm].evaluate(state, now_us, hit.limit, hit.cost)
        tentative.append(result)
        if result.state is not None:  # admitted, or an overdraft charge
            staged[hit.key] = (result.state, result.ttl_us)
        if not result.admitted and not hit.shadow:
            rejected = True
    if not rejected:
        return [Outcome(r.admitted, r.remaining, r.reset_us) for r in tentative], staged
    writes = {hit.key: staged[hit.key] for hit in hits if hit.limit.overdraft and hit.key in staged}
    outcomes = []
    for hit, result in zip(hits, tentative, strict=True):
        if hit.limit.overdraft:
            outcomes.append(Outcome(result.admitted, result.remaining, result.reset_us))
            continue
        # Nothing is consumed: report the untouched counter, keeping each hit's own verdict.
        peek = algorithms[hit.limit.algorithm].evaluate(loaded[hit.key], now_us, hit.limit, 0)
        reset_us = peek.reset_us if result.admitted else result.reset_us
        outcomes.append(Outcome(result.admitted, peek.remaining, reset_us))
    return outcomes, writes
