"""The HTTP endpoints' behaviour: readiness, the loaded rules, decisions over JSON, and
explanations of them."""

from __future__ import annotations

import json
import time
from http import HTTPStatus

from google.protobuf import json_format

from ratelimitd.core.engine import Engine
from ratelimitd.core.rule_fields import config_line
from ratelimitd.model.messages import (
    Code,
    Decision,
    InvalidRequestError,
    Request,
    StoreUnavailableError,
)
from ratelimitd.model.rules import Config
from ratelimitd.observe import metrics
from ratelimitd.protos.envoy.service.ratelimit.v3 import rls_pb2
from ratelimitd.tools import explain
from ratelimitd.transports import rls_codec, rls_wire
from ratelimitd.transports.errors import error_status
from ratelimitd.transports.grpc_status import NAMES
from ratelimitd.transports.health import Readiness, store_answers
from ratelimitd.transports.http import Response, Routes, text

JSON = "application/json"


def rlconfig(config: Config) -> str:
    """Every loaded rule, one line each, in file order."""
    return "".join(config_line(rule) + "\n" for rule in config.rules)


def routes(
    engine: Engine,
    readiness: Readiness,
    recorder: metrics.Recorder,
    dynamic_metadata: bool = False,
    *,
    admin: bool = True,
) -> Routes:
    """The route table served on --http-addr; without `admin` (the public gRPC port of the
    asgi transport), only /healthcheck and /json: the config (and /explain, which shows it)
    stays on loopback. `recorder` counts /json's decisions and serves /metrics; with
    `dynamic_metadata`, /json's answers carry it as ShouldRateLimit's do."""
    table = Routes()

    async def healthcheck(_: bytes) -> Response:
        if not readiness.serving:
            return text(HTTPStatus.SERVICE_UNAVAILABLE, "not serving")
        if not await store_answers(engine.store):
            return text(HTTPStatus.SERVICE_UNAVAILABLE, "store unavailable")
        return text(HTTPStatus.OK, "OK")

    async def show_config(_: bytes) -> Response:
        return Response(HTTPStatus.OK, rlconfig(engine.config).encode())

    async def decide(body: bytes) -> Response:
        started = time.perf_counter()
        domain = None
        try:
            message = json_format.Parse(body, rls_pb2.RateLimitRequest())
            request = rls_codec.decode(message)
            plan = engine.plan(request)
            domain = plan.domain
            decision = await engine.decide(plan)
        except BaseException as exc:
            recorder.call(domain, NAMES[error_status(exc)], time.perf_counter() - started)
            refusal = _json_refusal(exc)
            if refusal is None:
                raise
            return refusal
        recorder.call(domain, decision.code.name, time.perf_counter() - started)
        return _json_answer(request, decision, dynamic_metadata)

    async def explain_request(body: bytes) -> Response:
        # Not counted in the request metrics: an explanation is not a decision.
        try:
            message = json_format.Parse(body, rls_pb2.RateLimitRequest())
            found = await explain.explain(engine, rls_codec.decode(message))
        except (json_format.ParseError, InvalidRequestError) as exc:
            return text(HTTPStatus.BAD_REQUEST, f"invalid request: {exc}")
        return Response(HTTPStatus.OK, json.dumps(explain.to_json(found)).encode() + b"\n", JSON)

    async def show_metrics(_: bytes) -> Response:
        return Response(HTTPStatus.OK, recorder.exposition(), metrics.CONTENT_TYPE)

    table.add("GET", "/healthcheck", healthcheck)
    table.add("POST", "/json", decide)
    if admin:
        table.add("GET", "/rlconfig", show_config)
        table.add("GET", "/metrics", show_metrics)
        table.add("POST", "/explain", explain_request)
    return table


def _json_refusal(exc: BaseException) -> Response | None:
    """The /json answer to a request that failed with `exc`; None if it is not the client's
    doing or the store's (the HTTP server answers those)."""
    if isinstance(exc, json_format.ParseError):
        return text(HTTPStatus.BAD_REQUEST, f"invalid RateLimitRequest JSON: {exc}")
    if isinstance(exc, InvalidRequestError):
        return text(HTTPStatus.BAD_REQUEST, f"invalid request: {exc}")
    if isinstance(exc, StoreUnavailableError):
        return text(HTTPStatus.SERVICE_UNAVAILABLE, str(exc))
    return None


def _json_answer(request: Request, decision: Decision, dynamic_metadata: bool) -> Response:
    """A decision as /json answers it: the RateLimitResponse ShouldRateLimit would send, in
    protobuf's JSON; 429 when over the limit."""
    status = HTTPStatus.TOO_MANY_REQUESTS if decision.code is Code.OVER_LIMIT else HTTPStatus.OK
    metadata = b""
    if dynamic_metadata:
        metadata = rls_wire.metadata_field(rls_wire.request_metadata(request), decision.statuses)
    response = rls_pb2.RateLimitResponse.FromString(
        rls_wire.encode_response(decision, None, metadata)
    )
    answer = json_format.MessageToJson(response, indent=None)
    return Response(status, answer.encode() + b"\n", JSON)
