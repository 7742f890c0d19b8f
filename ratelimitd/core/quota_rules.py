"""A rate_limit_quota bucket -> the rule whose limit is its fleet-wide quota.

The domain's `rlqs.bucket_keys` name the bucket_id entries that, in that order, form a
descriptor; keys the bucket_id lacks are left out. The descriptor is matched exactly as the
rate limit service matches one (core.matcher). A matched rule with a limit is the quota; an
unlimited rule allows all; a bucket matching no rule gets the domain's `unmatched`.
A domain without an `rlqs:` section (or unknown) has no buckets: None (Envoy is told to
abandon them).
"""

from __future__ import annotations

from ratelimitd.core.matcher import match
from ratelimitd.model.quota import BucketId
from ratelimitd.model.rules import Blanket, Config, Rule


def descriptor(keys: tuple[str, ...], bucket: BucketId) -> tuple[tuple[str, str], ...]:
    """The descriptor entries a bucket_id stands for."""
    values = dict(bucket)
    return tuple((key, values[key]) for key in keys if key in values)


def resolve(config: Config, domain: str, bucket: BucketId) -> Rule | Blanket | None:
    """The bucket's quota: a rule with a limit, a blanket rule, or None (not ours)."""
    found = config.domains.get(domain)
    if found is None or found.rlqs is None:
        return None
    entries = descriptor(found.rlqs.keys, bucket)
    matched = match(found.root, entries) if entries else None
    if matched is None:
        target: Rule | Blanket = found.rlqs.unmatched
    else:
        target = matched.rule
    if isinstance(target, Rule):
        if target.limit is None:
            return Blanket.ALLOW_ALL
        if target.limit.requests_per_unit == 0:
            return Blanket.DENY_ALL
    return target
