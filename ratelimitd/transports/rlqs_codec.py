"""RLQS messages <-> the front door's model: usage reports in, bucket actions out."""

from __future__ import annotations

from collections.abc import Sequence

from ratelimitd.model.quota import BucketAction, TokenBucket, Usage, bucket_id
from ratelimitd.model.rules import Blanket
from ratelimitd.protos.envoy.service.rate_limit_quota.v3 import rlqs_pb2
from ratelimitd.protos.envoy.type.v3 import ratelimit_strategy_pb2

_BLANKETS = {
    Blanket.ALLOW_ALL: ratelimit_strategy_pb2.RateLimitStrategy.ALLOW_ALL,
    Blanket.DENY_ALL: ratelimit_strategy_pb2.RateLimitStrategy.DENY_ALL,
}


def decode_reports(data: bytes) -> tuple[str, list[Usage]]:
    """A RateLimitQuotaUsageReports: its domain and its buckets' usage (DecodeError when
    malformed)."""
    message = rlqs_pb2.RateLimitQuotaUsageReports.FromString(data)
    usages = [
        Usage(
            bucket_id(u.bucket_id.bucket),
            u.num_requests_allowed,
            u.num_requests_denied,
            u.time_elapsed.seconds,
        )
        for u in message.bucket_quota_usages
    ]
    return message.domain, usages


def encode_actions(actions: Sequence[BucketAction]) -> bytes:
    """A RateLimitQuotaResponse carrying `actions` in order."""
    response = rlqs_pb2.RateLimitQuotaResponse()
    for action in actions:
        pb = response.bucket_action.add()
        pb.bucket_id.bucket.update(dict(action.bucket))
        if action.assignment is None:
            pb.abandon_action.SetInParent()
            continue
        assign = pb.quota_assignment_action
        assign.assignment_time_to_live.seconds = action.assignment.ttl_s
        strategy = action.assignment.strategy
        if isinstance(strategy, TokenBucket):
            bucket = assign.rate_limit_strategy.token_bucket
            bucket.max_tokens = strategy.max_tokens
            bucket.tokens_per_fill.value = strategy.tokens_per_fill
            bucket.fill_interval.seconds = strategy.fill_interval_s
        else:
            assign.rate_limit_strategy.blanket_rule = _BLANKETS[strategy]
    return response.SerializeToString()
