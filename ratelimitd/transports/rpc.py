"""The RPCs every transport serves, bytes in and bytes out: decoding, the engine call and
encoding happen once here, whichever transport carries them."""

from __future__ import annotations

import logging

import structlog
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2

from ratelimitd import metrics, tracing
from ratelimitd.admin import Readiness
from ratelimitd.engine import Engine
from ratelimitd.messages import Decision, InvalidRequestError, StoreUnavailableError
from ratelimitd.protos.envoy.service.ratelimit.v3 import rls_pb2
from ratelimitd.tracing import TRACER, CallContext
from ratelimitd.transports import rls_codec, rls_wire
from ratelimitd.transports.grpc_status import INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE, GrpcError

log = structlog.get_logger(__name__)

RLS_SERVICE = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name
RLS_METHOD = f"/{RLS_SERVICE}/ShouldRateLimit"
HEALTH_METHOD = "/grpc.health.v1.Health/Check"
HEALTH_SERVICES = ("", RLS_SERVICE)


class Rpc:
    """ShouldRateLimit and Health/Check over serialized messages; failures are GrpcError."""

    def __init__(self, engine: Engine, readiness: Readiness) -> None:
        self._engine = engine
        self._readiness = readiness

    async def should_rate_limit(self, data: bytes, context: CallContext | None = None) -> bytes:
        """A serialized RateLimitResponse for a serialized RateLimitRequest; `context` is what
        the call's metadata says of its origin."""
        if not self._readiness.serving:
            raise GrpcError(UNAVAILABLE, "not serving")
        if context is not None:
            tracing.bind(context)
        span = TRACER.start(context) if TRACER.enabled else None
        call = metrics.Call()
        try:
            with metrics.counted(call):
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
        finally:
            if span is not None:
                TRACER.end(span, call.domain, call.code, call.store_s)
        if log.is_enabled_for(logging.DEBUG):
            log.debug("decision", domain=call.domain, code=call.code, statuses=describe(decision))
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


def describe(decision: Decision) -> list[dict[str, object]]:
    """A decision's statuses for a log event: rule, result and what remains."""
    return [
        {
            "code": status.code.name,
            "rule": status.rule.full_key if status.rule else None,
            "result": status.result.value if status.result else None,
            "remaining": status.remaining,
        }
        for status in decision.statuses
    ]
