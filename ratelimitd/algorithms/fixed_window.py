"""Fixed window, as envoyproxy/ratelimit counts: windows of one unit (or `unit_multiplier`
units: Limit.unit_us) aligned to the Unix epoch, or calendar windows (algorithms.windows);
a hit passes when the window's count plus its cost stays within requests_per_unit.

Unlike the reference, a rejected hit does not increase the count, so a client hammering a
closed window does not change what it gets once the window reopens. A cost of 0 only asks
whether a cost of 1 would pass. With overdraft, a cost that does not pass is counted anyway,
up to `overdraft` past the limit.

State per key: (window start us, count); it expires when the window ends.
lua/fixed_window.lua is the same function.
"""

from __future__ import annotations

from typing import cast

from ratelimitd.algorithms.base import Algorithm, Evaluation, State
from ratelimitd.algorithms.windows import window
from ratelimitd.model.rules import Limit


def evaluate(state: State | None, now_us: int, limit: Limit, cost: int) -> Evaluation:
    """Offer `cost` to the window containing `now_us`."""
    start, end = window(limit, now_us)
    until_end = end - now_us
    count = 0
    if state is not None:
        stored_start, stored = cast(tuple[int, int], state)
        if stored_start == start:
            count = stored
    allowed = limit.requests_per_unit
    if count + max(cost, 1) > allowed:
        if cost and limit.overdraft:
            # Counted anyway, up to `overdraft` past the limit: the rest of the window waits.
            count = min(count + cost, allowed + limit.overdraft)
            return Evaluation(False, (start, count), 0, until_end, until_end)
        return Evaluation(False, None, max(0, allowed - count), until_end, 0)
    if cost == 0:
        return Evaluation(True, None, allowed - count, until_end, 0)
    count += cost
    return Evaluation(True, (start, count), allowed - count, until_end, until_end)


FIXED_WINDOW = Algorithm(name="fixed_window", key_tag="fw", evaluate=evaluate, uses_burst=False)
