"""Fixed window, as envoyproxy/ratelimit counts: windows of one unit aligned to the Unix
epoch; a hit passes when the window's count plus its cost stays within requests_per_unit.

Unlike the reference, a rejected hit does not increase the count, so a client hammering a
closed window does not change what it gets once the window reopens.

State per key: (window start us, count); it expires when the window ends.
lua/fixed_window.lua is the same function.
"""

from __future__ import annotations

from typing import cast

from ratelimitd.algorithms.base import Algorithm, Evaluation, State
from ratelimitd.config.model import Limit


def evaluate(state: State | None, now_us: int, limit: Limit, cost: int) -> Evaluation:
    """Offer `cost` to the window containing `now_us`."""
    unit_us = limit.unit_us
    start = now_us - now_us % unit_us
    until_end = start + unit_us - now_us
    count = 0
    if state is not None:
        window, stored = cast(tuple[int, int], state)
        if window == start:
            count = stored
    allowed = limit.requests_per_unit
    if count + cost > allowed:
        return Evaluation(False, None, allowed - count, until_end, 0)
    if cost == 0:
        return Evaluation(True, None, allowed - count, until_end, 0)
    count += cost
    return Evaluation(True, (start, count), allowed - count, until_end, until_end)


FIXED_WINDOW = Algorithm(name="fixed_window", key_tag="fw", evaluate=evaluate, uses_burst=False)
