"""The vocabulary of the rate_limit_quota front door (RLQS): what an Envoy reports of a
bucket, the demand a replica keeps of it, and what it is assigned back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ratelimitd.model.rules import Blanket

# A bucket_id with its keys sorted: Envoy treats {a: 1, b: 2} and {b: 2, a: 1} as one bucket.
BucketId = tuple[tuple[str, str], ...]


def bucket_id(entries: Mapping[str, str]) -> BucketId:
    """The canonical form of a bucket_id map."""
    return tuple(sorted(entries.items()))


@dataclass(frozen=True, slots=True)
class Usage:
    """One bucket's counts from one usage report of one Envoy, and the time they cover as
    Envoy says (whole seconds, truncated; 0 when unknown)."""

    bucket: BucketId
    allowed: int
    denied: int
    elapsed_s: int = 0


@dataclass(frozen=True, slots=True)
class Demand:
    """What one Envoy (`client`) asks of one bucket: requests per second offered (allowed and
    denied, smoothed over its reports; None until a second report measures it), when its
    last report arrived (microseconds), the time between its reports (seconds), and the
    fraction of the quota it was last assigned."""

    client: str
    rate: float | None
    seen_us: int
    interval_s: float
    assigned: float


@dataclass(frozen=True, slots=True)
class TokenBucket:
    """A token bucket as Envoy enforces it: starts with max_tokens, refilled continuously at
    tokens_per_fill per fill_interval_s (whole seconds: Envoy ignores fractions)."""

    max_tokens: int
    tokens_per_fill: int
    fill_interval_s: int


@dataclass(frozen=True, slots=True)
class Assignment:
    """A bucket's quota_assignment_action: the strategy and how long Envoy may keep it."""

    strategy: Blanket | TokenBucket
    ttl_s: int


@dataclass(frozen=True, slots=True)
class BucketAction:
    """What one Envoy is told about one bucket: an assignment, or None to abandon it."""

    bucket: BucketId
    assignment: Assignment | None


@dataclass(frozen=True, slots=True)
class QuotaReport:
    """What the metrics hear of one bucket report: the rule (domain and label) whose quota
    the bucket shares, the Envoy's counts since its last report, and the bucket as it
    stands after the split: Envoys reporting it, their demand (requests/s), the fractions
    assigned (summed over them) and the quota (requests/s)."""

    domain: str
    rule: str
    allowed: int
    denied: int
    reporting: int
    demand: float
    assigned: float
    quota: float
