"""A call's x-request-id and traceparent reach every log event it causes, and with --tracing
its span joins the caller's trace; on both transports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from tests.conftest import Ratelimitd, RatelimitdFactory, RedisServer, wait_until

CONFIG = """
domain: ctx
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 5}
"""
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"
METADATA = (("x-request-id", "req-42"), ("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN}-01"))
TRANSPORTS = ["grpc", "asgi"]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "ctx.yaml"
    path.write_text(CONFIG)
    return path


def ask(server: Ratelimitd, metadata: tuple[tuple[str, str], ...] = METADATA) -> int:
    request = rls_pb2.RateLimitRequest(
        domain="ctx",
        descriptors=[
            ratelimit_pb2.RateLimitDescriptor(
                entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key="tenant", value="t")]
            )
        ],
    )
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        answer = stub.ShouldRateLimit(request, metadata=metadata, timeout=5)
    return int(answer.overall_code)


def records(server: Ratelimitd) -> list[dict[str, Any]]:
    """Every JSON line the server wrote (log events and console spans)."""
    found = []
    for line in server.logs().splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def events(server: Ratelimitd, name: str) -> list[dict[str, Any]]:
    return [record for record in records(server) if record.get("event") == name]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_debug_decision_events_carry_request_and_trace_ids(
    ratelimitd: RatelimitdFactory, config: Path, transport: str
) -> None:
    server = ratelimitd(config, "--log-level", "debug", transport=transport)
    assert ask(server) == rls_pb2.RateLimitResponse.OK
    assert ask(server, ()) == rls_pb2.RateLimitResponse.OK  # no metadata: no ids
    wait_until(lambda: len(events(server, "decision")) == 2, 10, "two decision events")
    with_ids, without = events(server, "decision")
    assert (with_ids["request_id"], with_ids["trace_id"]) == ("req-42", TRACE_ID)
    assert with_ids["domain"] == "ctx"
    assert with_ids["statuses"] == [
        {"code": "OK", "rule": "ctx.tenant", "result": "within_limit", "remaining": 4}
    ]
    assert "request_id" not in without
    assert "trace_id" not in without


def test_decisions_are_not_logged_at_info(ratelimitd: RatelimitdFactory, config: Path) -> None:
    server = ratelimitd(config)
    ask(server)
    ask(server)
    assert not events(server, "decision")


def test_a_store_failure_is_logged_with_the_request_id(
    ratelimitd: RatelimitdFactory, config: Path, own_redis: RedisServer
) -> None:
    server = ratelimitd(config, redis_url=own_redis.url)
    own_redis.process.kill()
    own_redis.process.wait(timeout=10)
    assert ask(server) == rls_pb2.RateLimitResponse.OK  # the rule allows on failure
    [failure] = events(server, "store_failure")
    assert (failure["request_id"], failure["trace_id"]) == ("req-42", TRACE_ID)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_span_joins_the_callers_trace(
    ratelimitd: RatelimitdFactory, config: Path, transport: str
) -> None:
    server = ratelimitd(config, "--tracing", "console", transport=transport)
    assert ask(server) == rls_pb2.RateLimitResponse.OK

    def spans() -> list[dict[str, Any]]:
        return [record for record in records(server) if "context" in record]

    wait_until(lambda: len(spans()) == 1, 10, "one span")
    [span] = spans()
    assert span["name"] == "envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
    assert span["kind"] == "SpanKind.SERVER"
    assert span["context"]["trace_id"] == f"0x{TRACE_ID}"
    assert span["parent_id"] == f"0x{PARENT_SPAN}"
    attributes = span["attributes"]
    assert (attributes["ratelimit.domain"], attributes["ratelimit.code"]) == ("ctx", "OK")
    assert attributes["ratelimit.store_ms"] >= 0
    assert span["resource"]["attributes"]["service.name"] == "ratelimitd"
