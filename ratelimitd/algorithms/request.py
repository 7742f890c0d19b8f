"""What one request's hits get: the rules that turn the hits' tentative evaluations into the
request's answer, and the all-or-nothing evaluation of a request against stored states.

Every store answers by these rules: the memory store through evaluate_hits(), the cluster
store by settling the per-slot parts of a request with settle(), and lua/request.lua performs
the same steps, in the same order and with the same floating-point operations, inside Redis.
The rules:

- A request is admitted only if every non-shadow hit is admitted, with one exception: quota
  hits (the reference's `quota_mode`) reject it only all together. A request with quota hits
  is rejected when a non-shadow, non-quota hit is not admitted, or when no non-shadow quota
  hit is. When it is rejected, it consumes nothing from limits without overdraft. An
  admitted request commits what each of its hits charged as any admitted request does: a
  quota hit over its limit charged nothing (unless it has overdraft).
- A limit with overdraft keeps every charge, past its limit too and whatever the request's
  other limits answer: it meters usage that has already happened (a charge Envoy sends after
  the response), so dropping a charge would let usage go unpaid.
- A rejected request reports, for each hit without overdraft, its own verdict and the
  counter as the request found it (read at cost 0): what a client can still get there.
- Hits on the same key within one request see each other's consumption, in request order.
- A cost of 0 never changes state: it asks whether a cost of 1 would pass. Zero-cost shadow
  copies of hits (probes()) therefore read counters without touching or rejecting anything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ratelimitd.algorithms.base import Algorithm, Evaluation, Hit, Outcome, State


def settle(
    hits: Sequence[Hit],
    tentative: list[Outcome],
    untouched: Callable[[int], Outcome | Evaluation],
) -> tuple[list[Outcome], bool]:
    """The answer to a request whose hits were each evaluated as if it would be admitted
    (`tentative`, one per hit in request order): one outcome per hit (`tentative` itself when
    admitted), and whether the request is rejected. `untouched(i)` reads hit i's counter at
    cost 0 as the request found it; it is asked only for a rejected request's hits without
    overdraft. Tentative outcomes already settled this way settle to themselves."""
    if not rejects(hits, tentative):
        return tentative, False
    outcomes = []
    for i, (hit, outcome) in enumerate(zip(hits, tentative, strict=True)):
        if keeps_charge(hit, rejected=True):
            outcomes.append(outcome)
            continue
        # Nothing is consumed: report the untouched counter, keeping each hit's own verdict.
        peek = untouched(i)
        reset_us = peek.reset_us if outcome.admitted else outcome.reset_us
        outcomes.append(Outcome(outcome.admitted, peek.remaining, reset_us))
    return outcomes, True


def rejects(hits: Sequence[Hit], tentative: Sequence[Outcome]) -> bool:
    """Whether the request is rejected: a non-shadow, non-quota hit was not admitted, or it
    has non-shadow quota hits and none of them was admitted."""
    quota_over = quota_passed = False
    # A loop, not any() over a generator, and strict=False (one outcome per hit by
    # construction): this runs for every request.
    for hit, outcome in zip(hits, tentative, strict=False):
        if hit.shadow:
            continue
        if hit.quota:
            if outcome.admitted:
                quota_passed = True
            else:
                quota_over = True
        elif not outcome.admitted:
            return True
    return quota_over and not quota_passed


def keeps_charge(hit: Hit, rejected: bool) -> bool:
    """Whether what `hit` charged stays committed when its request is (not) `rejected`."""
    return not rejected or hit.limit.overdraft > 0


def probes(hits: Sequence[Hit]) -> list[Hit]:
    """Zero-cost shadow copies of `hits`: evaluated just before them, they read each counter
    as the hits find it, changing nothing and rejecting nothing."""
    return [hit._replace(cost=0, shadow=True) for hit in hits]


def evaluate_hits(
    hits: Sequence[Hit],
    now_us: int,
    load: Callable[[str], State | None],
    algorithms: dict[str, Algorithm],
) -> tuple[list[Outcome], dict[str, tuple[State, int]]]:
    """Evaluate one request's hits all-or-nothing against the states `load` reads.

    Returns one outcome per hit and the writes to commit as {key: (state, ttl_us)}: when the
    request is rejected, only the charges of limits with overdraft.
    """
    loaded: dict[str, State | None] = {}
    staged: dict[str, tuple[State, int]] = {}
    tentative: list[Outcome] = []
    for hit in hits:
        if hit.key in staged:
            state: State | None = staged[hit.key][0]
        else:
            if hit.key not in loaded:
                loaded[hit.key] = load(hit.key)
            state = loaded[hit.key]
        result = algorithms[hit.limit.algorithm].evaluate(state, now_us, hit.limit, hit.cost)
        tentative.append(Outcome(result.admitted, result.remaining, result.reset_us))
        if result.state is not None:  # admitted, or an overdraft charge
            staged[hit.key] = (result.state, result.ttl_us)

    def untouched(i: int) -> Evaluation:
        hit = hits[i]
        return algorithms[hit.limit.algorithm].evaluate(loaded[hit.key], now_us, hit.limit, 0)

    outcomes, rejected = settle(hits, tentative, untouched)
    if not rejected:
        return outcomes, staged
    writes = {
        hit.key: staged[hit.key]
        for hit in hits
        if keeps_charge(hit, rejected) and hit.key in staged
    }
    return outcomes, writes
