"""The fleet quota of one rate_limit_quota bucket, split among the Envoys that report it:
pure arithmetic on demands, no clock, no I/O (the RLQS service around it has those).

- Share: FLOOR_FRACTION of the quota is split evenly among the Envoys reporting the bucket
  (an Envoy that just started admits something before its demand is known), the rest in
  proportion to each one's demand (allowed + denied per second, smoothed over reports).
  With no demand anywhere, the quota is split evenly.
- Envoys report (and are answered) one at a time, so a share grows only into what the
  others are not assigned: shrinking is immediate, growing waits for the others' next
  reports. The assignments in force never sum past the quota by more than the floors and
  the rebalance tolerance.
- Envoy enforces a share as a token bucket refilled continuously at tokens_per_fill per
  fill_interval (the rule's window), which starts full. It replaces a bucket, full again,
  whenever the assignment differs from the last, so capacity (max_tokens) is kept to half a
  reporting interval of the share, and a new split that moves a share by at most
  REBALANCE_TOLERANCE keeps the assignment last sent (settle): the fleet admits within that
  tolerance of the quota, and steady load does not refill buckets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ratelimitd.model.quota import Demand, TokenBucket
from ratelimitd.model.rules import Limit

FLOOR_FRACTION = 0.1
REBALANCE_TOLERANCE = 0.1
# Weight of the newest measurement in a demand's smoothed rate.
SMOOTHING = 0.5
# Capacity of an Envoy's bucket, in reporting intervals of its share.
BURST_INTERVALS = 0.5
# Assignments live this many reporting intervals; demand not reported for as long is forgotten.
TTL_INTERVALS = 3


def smoothed(previous: float | None, measured: float) -> float:
    """A demand's new rate from its previous smoothed rate (None: none yet) and the rate
    measured over the latest report."""
    if previous is None:
        return measured
    return SMOOTHING * measured + (1 - SMOOTHING) * previous


def fractions(demands: Sequence[Demand]) -> dict[str, float]:
    """Each reporting Envoy's fraction of the quota; they sum to 1."""
    if not demands:
        return {}
    even = 1 / len(demands)
    rates = {d.client: max(d.rate or 0.0, 0.0) for d in demands}
    total = sum(rates.values())
    if total <= 0:
        return {client: even for client in rates}
    floor = FLOOR_FRACTION * even
    return {client: floor + (1 - FLOOR_FRACTION) * rate / total for client, rate in rates.items()}


def fraction_for(client: str, demands: Sequence[Demand]) -> float:
    """The fraction `client` (one of `demands`) is assigned now: its proportional target,
    within what the others are assigned, and never below its floor."""
    target = fractions(demands)[client]
    others = sum(d.assigned for d in demands if d.client != client)
    return max(FLOOR_FRACTION / len(demands), min(target, 1 - others))


def token_bucket(limit: Limit, fraction: float, interval_s: float) -> TokenBucket:
    """One Envoy's share of `limit` as the bucket Envoy enforces. At least one token per
    window: an Envoy with a share admits something (so a quota smaller than the number of
    Envoys is exceeded by at most one request per Envoy per window)."""
    window = limit.window_seconds
    per_fill = max(1, math.floor(fraction * limit.requests_per_unit))
    burst_window = min(interval_s * BURST_INTERVALS, window)
    capacity = max(1, math.ceil(fraction * limit.burst * burst_window / window))
    return TokenBucket(capacity, per_fill, window)


def settle(previous: TokenBucket | None, new: TokenBucket) -> TokenBucket:
    """The assignment to send: the previous one while the new split moves the share by at
    most REBALANCE_TOLERANCE of it (Envoy keeps its bucket's tokens), else the new one."""
    if previous is None or previous.fill_interval_s != new.fill_interval_s:
        return new
    if abs(previous.tokens_per_fill - new.tokens_per_fill) <= (
        REBALANCE_TOLERANCE * new.tokens_per_fill
    ):
        return previous
    return new


def ttl_seconds(interval_s: float) -> int:
    """An assignment's time to live in whole seconds (Envoy ignores fractions), at least 1."""
    return max(1, math.ceil(TTL_INTERVALS * interval_s))


def is_live(demand: Demand, now_us: int) -> bool:
    """Whether the Envoy reported the bucket within its last TTL_INTERVALS intervals (else
    it is forgotten: it stopped, or stopped sending this bucket)."""
    return now_us - demand.seen_us <= TTL_INTERVALS * demand.interval_s * 1_000_000
