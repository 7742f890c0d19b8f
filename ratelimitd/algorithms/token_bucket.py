"""Token bucket: capacity `burst` (default requests_per_unit), refilled continuously at
requests_per_unit per unit; a hit of cost c passes when the bucket holds at least c tokens.
A cost of 0 only asks: it passes when a cost of 1 would, and takes nothing. With overdraft, a
cost that does not pass is taken anyway, down to -overdraft tokens (a debt).

State per key: (tokens, last refill time in microseconds). lua/token_bucket.lua is the same
function, operation for operation, so both stores give bit-identical answers.

A stored state is kept for exactly the time the bucket needs to refill (its TTL), and a
state that old reads as exactly full; so an expired key and a live one can never disagree.
"""

from __future__ import annotations

import math
from typing import cast

from ratelimitd.algorithms.base import Algorithm, Evaluation, State
from ratelimitd.model.rules import Limit


def evaluate(state: State | None, now_us: int, limit: Limit, cost: int) -> Evaluation:
    """Offer `cost` tokens to the bucket in `state` at time `now_us` (0: only ask whether one
    would pass)."""
    if limit.requests_per_unit == 0:
        # requests_per_unit: 0 rejects every hit, as in the reference; retry after one unit.
        return Evaluation(False, None, 0, limit.unit_us, 0)
    capacity = float(limit.burst)
    rate = float(limit.requests_per_unit)
    unit_us = float(limit.unit_us)
    tokens, last = capacity, now_us
    if state is not None:
        tokens, last = cast(tuple[float, int], state)
        if now_us > last:
            elapsed = now_us - last
            if elapsed >= _refill_us(capacity - tokens, unit_us, rate):
                tokens = capacity
            else:
                tokens = min(capacity, tokens + float(elapsed) * rate / unit_us)
            last = now_us
    if tokens >= max(cost, 1):
        if cost == 0:
            until_full = _refill_us(capacity - tokens, unit_us, rate)
            return Evaluation(True, None, math.floor(tokens), until_full, 0)
        left = tokens - cost
        until_full = _refill_us(capacity - left, unit_us, rate)
        return Evaluation(True, (left, last), math.floor(left), until_full, until_full)
    if cost and limit.overdraft:
        # Charged anyway, into a debt of at most `overdraft` tokens; the next hit waits
        # until refill has paid it back.
        left = max(tokens - cost, -float(limit.overdraft))
        until_full = _refill_us(capacity - left, unit_us, rate)
        return Evaluation(False, (left, last), 0, _refill_us(1.0 - left, unit_us, rate), until_full)
    # A cost above the capacity can never pass; report the time until the bucket is full.
    need = min(max(cost, 1), capacity)
    remaining = max(0, math.floor(tokens))
    return Evaluation(False, None, remaining, _refill_us(need - tokens, unit_us, rate), 0)


def _refill_us(tokens: float, unit_us: float, rate: float) -> int:
    """Microseconds, rounded up, to refill `tokens` at `rate` tokens per `unit_us`."""
    return math.ceil(tokens * unit_us / rate)


TOKEN_BUCKET = Algorithm(name="token_bucket", key_tag="tb", evaluate=evaluate, uses_burst=True)
