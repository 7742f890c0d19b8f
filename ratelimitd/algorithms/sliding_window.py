"""Sliding window, estimated from two fixed windows: the previous window's count weighted by
the share of it still inside the sliding window, plus the current window's count.

    estimate = previous * (unit - elapsed in current window) / unit + current

A hit passes when estimate + cost <= requests_per_unit; a rejected hit counts nothing. A cost
of 0 only asks whether a cost of 1 would pass. With overdraft, a cost that does not pass is
counted anyway, the current count at most `overdraft` past the limit.

The estimate assumes the previous window's hits were spread evenly. When they were not, the
real number of hits in the last unit can differ from the estimate by at most
previous * elapsed/unit (hits bunched late in the previous window: more admitted) or
previous * (1 - elapsed/unit) (bunched early: fewer admitted). So any interval of one unit
admits at most twice the limit in the worst case, and exactly the limit for even traffic.

State per key: (current window start us, previous count, current count); it expires when the
current window's hits no longer weigh on the estimate (two units after its start).
lua/sliding_window.lua is the same function, operation for operation.
"""

from __future__ import annotations

import math
from typing import cast

from ratelimitd.algorithms.base import Algorithm, Evaluation, State
from ratelimitd.model.rules import Limit


def evaluate(state: State | None, now_us: int, limit: Limit, cost: int) -> Evaluation:
    """Offer `cost` to the sliding window ending at `now_us`."""
    unit_us = limit.unit_us
    start = now_us - now_us % unit_us
    until_end = start + unit_us - now_us
    previous, current = 0, 0
    if state is not None:
        window, stored_previous, stored_current = cast(tuple[int, int, int], state)
        if window == start:
            previous, current = stored_previous, stored_current
        elif window == start - unit_us:
            previous = stored_current
    weight = float(until_end) / float(unit_us)
    allowed = limit.requests_per_unit
    estimate = previous * weight + current
    if estimate + max(cost, 1) > allowed:
        if cost and limit.overdraft:
            # Counted anyway, the current count at most `overdraft` past the limit.
            current = min(current + cost, allowed + limit.overdraft)
            wait = _wait_us(previous, current, 1, allowed, until_end, unit_us)
            return Evaluation(False, (start, previous, current), 0, wait, until_end + unit_us)
        remaining = max(0, math.floor(allowed - estimate))
        wait = _wait_us(previous, current, max(cost, 1), allowed, until_end, unit_us)
        return Evaluation(False, None, remaining, wait, 0)
    if cost == 0:
        return Evaluation(True, None, math.floor(allowed - estimate), until_end, 0)
    current += cost
    remaining = max(0, math.floor(allowed - (previous * weight + current)))
    ttl = until_end + unit_us
    return Evaluation(True, (start, previous, current), remaining, until_end, ttl)


def _wait_us(
    previous: int, current: int, cost: int, allowed: int, until_end: int, unit_us: int
) -> int:
    """Microseconds until `cost` would pass, assuming no other hits meanwhile."""
    if cost > allowed:
        return until_end  # never passes; report the end of the window
    if current + cost <= allowed:
        # Within this window, once the previous window's weight has decayed far enough.
        decayed = float(unit_us) * (float(allowed - current - cost) / float(previous))
        return max(0, math.ceil(float(until_end) - decayed))
    # In the next window, where this window's count becomes the weighted one.
    decayed = float(unit_us) * (float(allowed - cost) / float(current))
    return until_end + max(0, math.ceil(float(unit_us) - decayed))


SLIDING_WINDOW = Algorithm(name="sliding_window", key_tag="sw", evaluate=evaluate, uses_burst=False)
