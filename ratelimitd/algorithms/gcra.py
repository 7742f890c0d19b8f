"""GCRA (generic cell rate algorithm): one stored value per key, the theoretical arrival time
(TAT) at which the key would be fully idle again.

Each unit of cost moves the TAT forward by the emission interval unit / requests_per_unit; a
hit passes when the TAT it would produce is at most `burst` intervals ahead of now. From idle,
`burst` (default requests_per_unit) hits pass at once, then one per interval; Retry-After is
exact. A cost of 0 only asks whether a cost of 1 would pass. With overdraft, a cost that does
not pass moves the TAT anyway, at most `overdraft` intervals beyond the tolerance. It enforces
the same limits as the token bucket with half the state.

All arithmetic is in whole microseconds: the interval is rounded down to a whole microsecond
(at most 1 us per hit faster than configured; limits above one hit per microsecond per key
are capped there). lua/gcra.lua is the same function.
"""

from __future__ import annotations

from typing import cast

from ratelimitd.algorithms.base import Algorithm, Evaluation, State
from ratelimitd.model.rules import Limit


def evaluate(state: State | None, now_us: int, limit: Limit, cost: int) -> Evaluation:
    """Offer `cost` at time `now_us` to the key whose TAT is `state`."""
    if limit.requests_per_unit == 0:
        return Evaluation(False, None, 0, limit.unit_us, 0)
    interval = max(1, limit.unit_us // limit.requests_per_unit)
    tolerance = limit.burst * interval
    tat = now_us if state is None else max(cast(int, state), now_us)
    if cost == 0:
        # Only asks whether a cost of 1 would pass; reports the key as it is.
        if tat + interval - now_us <= tolerance:
            return Evaluation(True, None, (tolerance - (tat - now_us)) // interval, tat - now_us, 0)
        return Evaluation(False, None, 0, tat + interval - now_us - tolerance, 0)
    if cost <= limit.burst:
        new_tat = tat + cost * interval
        if new_tat - now_us <= tolerance:
            remaining = (tolerance - (new_tat - now_us)) // interval
            return Evaluation(True, new_tat, remaining, new_tat - now_us, new_tat - now_us)
    if limit.overdraft:
        # Charged anyway: the TAT moves past the tolerance by at most `overdraft` intervals.
        new_tat = min(tat + cost * interval, now_us + tolerance + limit.overdraft * interval)
        wait = new_tat + interval - now_us - tolerance
        return Evaluation(False, new_tat, 0, wait, new_tat - now_us)
    # A cost above the burst can never pass; report the time until the key is idle.
    need = min(cost, limit.burst)
    wait = max(0, tat + need * interval - now_us - tolerance)
    return Evaluation(False, None, max(0, (tolerance - (tat - now_us)) // interval), wait, 0)


GCRA = Algorithm(name="gcra", key_tag="gcra", evaluate=evaluate, uses_burst=True)
