"""The RPCs every transport serves, bytes in and bytes out: decoding, the engine call and
encoding happen once here, whichever transport carries them: RateLimitService/ShouldRateLimit,
Authorization/Check (ext_authz: ratelimitd.authz) and Health/Check."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import structlog
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2

from ratelimitd import authz, metrics, tracing
from ratelimitd.admin import Readiness
from ratelimitd.engine import Engine
from ratelimitd.messages import Decision, InvalidRequestError, StoreUnavailableError
from ratelimitd.protos.envoy.service.auth.v3 import external_auth_pb2
from ratelimitd.protos.envoy.service.ratelimit.v3 import rls_pb2
from ratelimitd.tracing import TRACER, CallContext
from ratelimitd.transports import authz_codec, authz_wire, rls_codec, rls_wire
from ratelimitd.transports.grpc_status import INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE, GrpcError

log = structlog.get_logger(__name__)

RLS_SERVICE = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name
RLS_METHOD = f"/{RLS_SERVICE}/ShouldRateLimit"
AUTHZ_SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
AUTHZ_METHOD = f"/{AUTHZ_SERVICE}/Check"
HEALTH_METHOD = "/grpc.health.v1.Health/Check"
HEALTH_SERVICES = ("", RLS_SERVICE, AUTHZ_SERVICE)


class Rpc:
    """ShouldRateLimit, Authorization/Check and Health/Check over serialized messages;
    failures are GrpcError.

    `authz_default_domain` is the domain of Check calls whose context extensions name none.
    """

    def __init__(
        self, engine: Engine, readiness: Readiness, authz_default_domain: str | None = None
    ) -> None:
        self._engine = engine
        self._readiness = readiness
        self._authz_default_domain = authz_default_domain

    async def should_rate_limit(self, data: bytes, context: CallContext | None = None) -> bytes:
        """A serialized RateLimitResponse for a serialized RateLimitRequest; `context` is what
        the call's metadata says of its origin."""
        with self._call(context, "RateLimitRequest", tracing.RLS_SPAN_NAME) as call:
            plan = self._engine.plan_for(
                data, lambda: rls_codec.decode(rls_pb2.RateLimitRequest.FromString(data))
            )
            decision = await call.decide(self._engine, plan)
        if log.is_enabled_for(logging.DEBUG):
            log.debug("decision", domain=call.domain, code=call.code, statuses=describe(decision))
        return rls_wire.encode_response(decision)

    async def check(self, data: bytes, context: CallContext | None = None) -> bytes:
        """A serialized CheckResponse for a serialized CheckRequest (Envoy's ext_authz): the
        request's descriptors extracted as its domain's config says, then decided."""
        with self._call(context, "CheckRequest", tracing.AUTHZ_SPAN_NAME) as call:
            attributes = authz_codec.decode(external_auth_pb2.CheckRequest.FromString(data))
            answer = await authz.authorize(
                self._engine, attributes, self._authz_default_domain, call
            )
        if log.is_enabled_for(logging.DEBUG):
            log.debug(
                "authz_decision",
                domain=answer.domain,
                verdict=answer.verdict.value,
                method=attributes.method,
                path=attributes.path,
            )
        return authz_wire.encode_check_response(answer)

    @contextlib.contextmanager
    def _call(
        self, context: CallContext | None, message: str, span_name: str
    ) -> Iterator[metrics.Call]:
        """One decision call, whichever RPC: refused while not serving, its origin bound to
        the logs, traced, counted, and its failures turned into gRPC errors."""
        if not self._readiness.serving:
            raise GrpcError(UNAVAILABLE, "not serving")
        if context is not None:
            tracing.bind(context)
        span = TRACER.start(context, span_name) if TRACER.enabled else None
        call = metrics.Call()
        try:
            with metrics.counted(call):
                yield call
        except DecodeError as exc:
            raise GrpcError(INVALID_ARGUMENT, f"malformed {message}: {exc}") from exc
        except InvalidRequestError as exc:
            raise GrpcError(INVALID_ARGUMENT, str(exc)) from exc
        except StoreUnavailableError as exc:
            raise GrpcError(UNAVAILABLE, str(exc)) from exc
        finally:
            if span is not None:
                TRACER.end(span, call.domain, call.code, call.store_s)

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
