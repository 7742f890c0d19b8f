"""The RPCs every transport serves, bytes in and bytes out: decoding, the engine call and
encoding happen once here, whichever transport carries them: RateLimitService/ShouldRateLimit,
Authorization/Check (ext_authz: ratelimitd.core.authz) and Health/Check.

This is the per-request path: a straight line of plain calls (no context managers, no
closures), with what every call of one request shape shares kept on its plan.
"""

from __future__ import annotations

import logging
import time
from typing import cast

import structlog
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2

from ratelimitd.core import authz
from ratelimitd.core.engine import Engine
from ratelimitd.core.plan import Plan
from ratelimitd.model.messages import Code, Decision, Request
from ratelimitd.model.observer import NO_OBSERVER, Observer
from ratelimitd.observe import tracing
from ratelimitd.observe.tracing import TRACER, Metadata
from ratelimitd.protos.envoy.service.auth.v3 import external_auth_pb2
from ratelimitd.protos.envoy.service.ratelimit.v3 import rls_pb2
from ratelimitd.transports import authz_codec, authz_wire, rls_codec, rls_wire
from ratelimitd.transports.errors import error_status
from ratelimitd.transports.grpc_status import (
    INVALID_ARGUMENT,
    NAMES,
    NOT_FOUND,
    UNAVAILABLE,
    GrpcError,
)
from ratelimitd.transports.health import Readiness
from ratelimitd.transports.plan_cache import PlanCache

log = structlog.get_logger(__name__)

RLS_SERVICE = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name
RLS_METHOD = f"/{RLS_SERVICE}/ShouldRateLimit"
AUTHZ_SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
AUTHZ_METHOD = f"/{AUTHZ_SERVICE}/Check"
HEALTH_METHOD = "/grpc.health.v1.Health/Check"
HEALTH_SERVICES = ("", RLS_SERVICE, AUTHZ_SERVICE)

_CODE_NAMES = {code: code.name for code in Code}
# The plan memo entry holding each status's encoded current_limit (rls_wire.current_limits).
_LIMITS_MEMO = "rls_wire.current_limits"
# The plan memo entry holding its last decision and that decision's encoded response.
_RESPONSE_MEMO = "rls_wire.last_response"
# The plan memo entry holding the request's encoded dynamic metadata entries.
_METADATA_MEMO = "rls_wire.request_metadata"


def _decode_request(data: bytes) -> Request:
    return rls_codec.decode(rls_pb2.RateLimitRequest.FromString(data))


class Rpc:
    """ShouldRateLimit, Authorization/Check and Health/Check over serialized messages;
    failures are GrpcError. Every call is reported to `observer`.

    `authz_default_domain` is the domain of Check calls whose context extensions name none.
    """

    def __init__(
        self,
        engine: Engine,
        readiness: Readiness,
        authz_default_domain: str | None = None,
        observer: Observer = NO_OBSERVER,
        *,
        dynamic_metadata: bool = False,
    ) -> None:
        self._engine = engine
        self._dynamic_metadata = dynamic_metadata
        self._plans = PlanCache(engine)
        self._readiness = readiness
        self._authz_default_domain = authz_default_domain
        self._observer = observer
        # Logging is configured before any Rpc exists; asking per call costs more than a flag.
        self._debug = log.is_enabled_for(logging.DEBUG)

    async def should_rate_limit(self, data: bytes, metadata: Metadata | None = None) -> bytes:
        """A serialized RateLimitResponse for a serialized RateLimitRequest; `metadata` is
        the call's (for logs and tracing)."""
        if not self._readiness.serving:
            raise GrpcError(UNAVAILABLE, "not serving")
        tracing.bind(metadata)
        span = TRACER.start(metadata, tracing.RLS_SPAN_NAME) if TRACER.enabled else None
        started = time.perf_counter()
        domain: str | None = None
        decision: Decision | None = None
        try:
            plan = self._plans.for_wire(data, _decode_request)
            domain = plan.domain
            decision = await self._engine.decide(plan)
        except BaseException as exc:
            self._failed(exc, "RateLimitRequest", domain, started, span)
            raise
        code = _CODE_NAMES[decision.code]
        self._observer.call(domain, code, time.perf_counter() - started)
        if span is not None:
            TRACER.end(span, domain, code, decision.store_s)
        if self._debug:
            log.debug("decision", domain=domain, code=code, statuses=describe(decision))
        memo = plan.memo
        # The engine hands out one decision again (an answer of the over-limit cache): so
        # is its encoding.
        last = cast("tuple[Decision, bytes] | None", memo.get(_RESPONSE_MEMO))
        if last is not None and last[0] is decision:
            return last[1]
        limits = cast("tuple[bytes, ...] | None", memo.get(_LIMITS_MEMO))
        if limits is None:
            limits = memo[_LIMITS_MEMO] = rls_wire.current_limits(decision.statuses)
        if self._dynamic_metadata:
            response = rls_wire.encode_response(decision, limits, _metadata(plan, data, decision))
        else:
            response = rls_wire.encode_response(decision, limits)
        memo[_RESPONSE_MEMO] = (decision, response)
        return response

    async def check(self, data: bytes, metadata: Metadata | None = None) -> bytes:
        """A serialized CheckResponse for a serialized CheckRequest (Envoy's ext_authz): the
        request's descriptors extracted as its domain's config says, then decided."""
        if not self._readiness.serving:
            raise GrpcError(UNAVAILABLE, "not serving")
        tracing.bind(metadata)
        span = TRACER.start(metadata, tracing.AUTHZ_SPAN_NAME) if TRACER.enabled else None
        started = time.perf_counter()
        try:
            attributes = authz_codec.decode(external_auth_pb2.CheckRequest.FromString(data))
            answer = await authz.authorize(
                self._engine, attributes, self._authz_default_domain, self._plans.for_request
            )
        except BaseException as exc:
            self._failed(exc, "CheckRequest", None, started, span)
            raise
        code = answer.verdict.value
        self._observer.call(answer.domain, code, time.perf_counter() - started)
        if span is not None:
            TRACER.end(span, answer.domain, code, answer.store_s)
        if self._debug:
            log.debug(
                "authz_decision",
                domain=answer.domain,
                verdict=answer.verdict.value,
                method=attributes.method,
                path=attributes.path,
            )
        return authz_wire.encode_check_response(answer)

    def _failed(
        self, exc: BaseException, message: str, domain: str | None, started: float, span: object
    ) -> None:
        """Count and trace a call that ended with `exc`; raise the GrpcError it is answered
        with, if it is one a client caused (anything else is the transport's to answer)."""
        status = error_status(exc)
        code = NAMES[status]
        self._observer.call(domain, code, time.perf_counter() - started)
        if span is not None:
            TRACER.end(span, domain, code, 0.0)
        if isinstance(exc, GrpcError) or status not in (INVALID_ARGUMENT, UNAVAILABLE):
            return
        detail = f"malformed {message}: {exc}" if isinstance(exc, DecodeError) else str(exc)
        raise GrpcError(status, detail) from exc

    async def health_check(self, data: bytes, _: Metadata | None = None) -> bytes:
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


def _metadata(plan: Plan, data: bytes, decision: Decision) -> bytes:
    """The answer's dynamic_metadata field; the request's part is kept on its plan (decoded
    again the first time: the plan keeps no request)."""
    entries = cast("dict[str, bytes] | None", plan.memo.get(_METADATA_MEMO))
    if entries is None:
        entries = rls_wire.request_metadata(_decode_request(data))
        plan.memo[_METADATA_MEMO] = entries
    return rls_wire.metadata_field(entries, decision.statuses)


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
