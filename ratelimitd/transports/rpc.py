"""The RPCs every transport serves, bytes in and bytes out: decoding, the engine call and
encoding happen once here, whichever transport carries them."""

from __future__ import annotations

from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2

from ratelimitd import metrics
from ratelimitd.admin import Readiness
from ratelimitd.engine import Engine
from ratelimitd.messages import InvalidRequestError, StoreUnavailableError
from ratelimitd.protos.envoy.service.ratelimit.v3 import rls_pb2
from ratelimitd.transports import rls_codec, rls_wire
from ratelimitd.transports.grpc_status import INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE, GrpcError

RLS_SERVICE = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name
RLS_METHOD = f"/{RLS_SERVICE}/ShouldRateLimit"
HEALTH_METHOD = "/grpc.health.v1.Health/Check"
HEALTH_SERVICES = ("", RLS_SERVICE)


class Rpc:
    """ShouldRateLimit and Health/Check over serialized messages; failures are GrpcError."""

    def __init__(self, engine: Engine, readiness: Readiness) -> None:
        self._engine = engine
        self._readiness = readiness

    async def should_rate_limit(self, data: bytes) -> bytes:
        """A serialized RateLimitResponse for a serialized RateLimitRequest."""
        if not self._readiness.serving:
            raise GrpcError(UNAVAILABLE, "not serving")
        try:
            with metrics.counted() as call:
                plan = self._engine.plan_for(
                    data, lambda: rls_codec.decode(rls_pb2.RateLimitRequest.FromString(data))
                )
                decision = await call.decide(self._engine, plan)
        except DecodeError as exc:
            raise GrpcError(INVALID_ARGUMENT, f"malformed RateLimitRequest: {exc}") from exc
        except InvalidRequestError as exc:
            raise GrpcError(INVALID_ARGUMENT, str(exc)) from exc
        except StoreUnavailableError as exc:
            raise GrpcError(UNAVAILABLE, str(exc)) from exc
        return rls_wire.encode_response(decision)

    async def health_check(self, data: bytes) -> bytes:
        """A serialized HealthCheckResponse: SERVING while ready, NOT_SERVING otherwise."""
        try:
            asked = health_pb2.HealthCheckRequest.FromString(data).service
        except DecodeError as exc:
            raise GrpcError(INVALID_ARGUMENT, f"malformed HealthCheckRequest: {exc}") from exc
        if asked not in HEALTH_SERVICES:
            raise GrpcError(NOT_FOUND, f"unknown service: {asked}")
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self._readiness.serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        answer: bytes = health_pb2.HealthCheckResponse(status=status).SerializeToString()
        return answer
