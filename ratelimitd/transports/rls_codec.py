"""RateLimitRequest protobuf -> engine Request, shared by every transport. (Responses are
written as bytes by rls_wire.)"""

from __future__ import annotations

from ratelimitd.model.messages import Descriptor, InvalidRequestError, LimitOverride, Request
from ratelimitd.model.rules import Unit
from ratelimitd.protos.envoy.service.ratelimit.v3 import rls_pb2

# envoy.type.v3.RateLimitUnit (descriptor limit overrides).
_OVERRIDE_UNITS = {
    1: Unit.SECOND,
    2: Unit.MINUTE,
    3: Unit.HOUR,
    4: Unit.DAY,
    5: Unit.MONTH,
    6: Unit.YEAR,
}


def decode(message: rls_pb2.RateLimitRequest) -> Request:
    """Convert a RateLimitRequest; raise InvalidRequestError for values the engine cannot use."""
    descriptors = []
    for i, pb in enumerate(message.descriptors):
        override = None
        if pb.HasField("limit"):
            unit = _OVERRIDE_UNITS.get(pb.limit.unit)
            if unit is None:
                raise InvalidRequestError(
                    f"descriptor {i} limit override has unknown unit {pb.limit.unit}"
                )
            override = LimitOverride(pb.limit.requests_per_unit, unit)
        descriptors.append(
            Descriptor(
                entries=tuple((e.key, e.value) for e in pb.entries),
                limit=override,
                hits_addend=pb.hits_addend.value if pb.HasField("hits_addend") else None,
            )
        )
    return Request(message.domain, tuple(descriptors), message.hits_addend)
