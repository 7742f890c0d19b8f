"""A running `ratelimitd serve`, driven over gRPC by a client generated from xds-protos
(Envoy's official code, not ours), on the memory store and on Redis."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.wrappers_pb2 import UInt64Value
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.conftest import Ratelimitd, RatelimitdFactory, RedisServer

OK = rls_pb2.RateLimitResponse.OK
OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT
MINUTE = rls_pb2.RateLimitResponse.RateLimit.MINUTE
RLS_SERVICE = "envoy.service.ratelimit.v3.RateLimitService"

CONFIG = """
domain: edge
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 10, name: per_tenant}
  - key: internal
    rate_limit: {unlimited: true}
  - key: legacy
    rate_limit: {unit: hour, requests_per_unit: 3, algorithm: fixed_window}
"""


def descriptor(
    *pairs: tuple[str, str], cost: int | None = None
) -> ratelimit_pb2.RateLimitDescriptor:
    pb = ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in pairs]
    )
    if cost is not None:
        pb.hits_addend.CopyFrom(UInt64Value(value=cost))
    return pb


def ask(
    stub: rls_pb2_grpc.RateLimitServiceStub,
    *descriptors: ratelimit_pb2.RateLimitDescriptor,
    domain: str = "edge",
    hits: int = 0,
) -> rls_pb2.RateLimitResponse:
    request = rls_pb2.RateLimitRequest(domain=domain, descriptors=descriptors, hits_addend=hits)
    response: rls_pb2.RateLimitResponse = stub.ShouldRateLimit(request, timeout=5)
    return response


def headers(response: rls_pb2.RateLimitResponse) -> dict[str, str]:
    return {h.key: h.value for h in response.response_headers_to_add}


@pytest.fixture(
    scope="module",
    params=[("grpc", "memory"), ("grpc", "redis"), ("asgi", "memory"), ("asgi", "redis")],
    ids=lambda p: "-".join(p),
)
def server(
    request: pytest.FixtureRequest,
    module_ratelimitd: RatelimitdFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Ratelimitd:
    """ratelimitd on each transport and each store, shared by this module's tests: each test
    uses tenants of its own."""
    transport, store = request.param
    config = tmp_path_factory.mktemp("grpc") / "edge.yaml"
    config.write_text(CONFIG)
    redis_url = None
    if store == "redis":
        redis_server.client().flushall()
        redis_url = redis_server.url
    return module_ratelimitd(config, redis_url=redis_url, transport=transport)


@pytest.fixture
def stub(server: Ratelimitd) -> Iterator[rls_pb2_grpc.RateLimitServiceStub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield rls_pb2_grpc.RateLimitServiceStub(channel)


def test_ten_per_minute_admits_exactly_ten_then_over_limit(
    stub: rls_pb2_grpc.RateLimitServiceStub,
) -> None:
    answers = [ask(stub, descriptor(("tenant", "acme"))) for _ in range(10)]
    assert [a.overall_code for a in answers] == [OK] * 10
    assert [a.statuses[0].limit_remaining for a in answers] == list(range(9, -1, -1))
    status = answers[0].statuses[0]
    assert (status.current_limit.requests_per_unit, status.current_limit.unit) == (10, MINUTE)
    assert status.current_limit.name == "per_tenant"

    over = ask(stub, descriptor(("tenant", "acme")))
    assert over.overall_code == OVER_LIMIT
    assert over.statuses[0].code == OVER_LIMIT
    assert over.statuses[0].limit_remaining == 0
    # One token refills in 6 s; a little has refilled while the test ran.
    reset = over.statuses[0].duration_until_reset
    assert 5 <= reset.seconds + reset.nanos / 1e9 <= 6
    assert headers(over)["Retry-After"] in {"5", "6"}
    assert headers(over)["X-RateLimit-Remaining"] == "0"


def test_two_tenants_do_not_share_a_bucket(stub: rls_pb2_grpc.RateLimitServiceStub) -> None:
    for _ in range(10):
        ask(stub, descriptor(("tenant", "a")))
    assert ask(stub, descriptor(("tenant", "a"))).overall_code == OVER_LIMIT
    fresh = ask(stub, descriptor(("tenant", "b")))
    assert (fresh.overall_code, fresh.statuses[0].limit_remaining) == (OK, 9)


def test_costs_unlimited_and_unmatched_over_the_wire(
    stub: rls_pb2_grpc.RateLimitServiceStub,
) -> None:
    response = ask(
        stub,
        descriptor(("tenant", "x"), cost=4),
        descriptor(("internal", "probe")),
        descriptor(("unknown", "key")),
        hits=2,
    )
    charged, unlimited, unmatched = response.statuses
    assert charged.limit_remaining == 6
    assert (unlimited.code, unlimited.limit_remaining) == (OK, 4294967295)
    assert not unlimited.HasField("current_limit")
    assert unmatched.code == OK
    assert not unmatched.HasField("current_limit")
    assert ask(stub, descriptor(("tenant", "x")), hits=2).statuses[0].limit_remaining == 4


def test_ok_answers_carry_rate_limit_headers(stub: rls_pb2_grpc.RateLimitServiceStub) -> None:
    response = ask(stub, descriptor(("tenant", "h")))
    assert headers(response) == {
        "X-RateLimit-Limit": '10, 10;w=60;name="per_tenant"',
        "X-RateLimit-Remaining": "9",
        "X-RateLimit-Reset": "6",
    }


def test_fixed_window_gives_the_reference_numbers(stub: rls_pb2_grpc.RateLimitServiceStub) -> None:
    answers = [ask(stub, descriptor(("legacy", "x"))) for _ in range(4)]
    assert [a.overall_code for a in answers] == [OK, OK, OK, OVER_LIMIT]
    assert [a.statuses[0].limit_remaining for a in answers] == [2, 1, 0, 0]
    # Every answer in one window reports the same window end, within the hour.
    ends = {a.statuses[0].duration_until_reset.seconds for a in answers}
    assert len(ends) <= 2
    assert max(ends) < 3600


def test_unknown_domain_is_ok(stub: rls_pb2_grpc.RateLimitServiceStub) -> None:
    response = ask(stub, descriptor(("tenant", "a")), domain="other")
    assert response.overall_code == OK
    assert not response.statuses[0].HasField("current_limit")


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (rls_pb2.RateLimitRequest(domain="", descriptors=[descriptor(("tenant", "a"))]), "domain"),
        (rls_pb2.RateLimitRequest(domain="edge"), "descriptor"),
        (rls_pb2.RateLimitRequest(domain="edge", descriptors=[descriptor(("", "a"))]), "empty key"),
        (rls_pb2.RateLimitRequest(domain="edge", descriptors=[descriptor()]), "no entries"),
        (
            rls_pb2.RateLimitRequest(
                domain="edge",
                descriptors=[
                    ratelimit_pb2.RateLimitDescriptor(
                        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key="tenant", value="a")],
                        limit=ratelimit_pb2.RateLimitDescriptor.RateLimitOverride(
                            requests_per_unit=5
                        ),
                    )
                ],
            ),
            "unit",
        ),
    ],
)
def test_invalid_requests_get_invalid_argument(
    stub: rls_pb2_grpc.RateLimitServiceStub, request_: rls_pb2.RateLimitRequest, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ShouldRateLimit(request_, timeout=5)
    error: grpc.Call = caught.value  # type: ignore[assignment]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (error.details() or "")


def test_health_reports_serving(server: Ratelimitd) -> None:
    with grpc.insecure_channel(server.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "envoy.service.ratelimit.v3.RateLimitService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert server.http("/healthcheck") == (200, "OK\n")


def test_reflection_describes_the_service(
    ratelimitd: RatelimitdFactory, write_config: Callable[..., Path]
) -> None:
    server = ratelimitd(write_config(CONFIG))  # reflection: the grpc transport only
    with grpc.insecure_channel(server.grpc_target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert "envoy.service.ratelimit.v3.RateLimitService" in database.get_services()
        pool = DescriptorPool(database)
        service = pool.FindServiceByName("envoy.service.ratelimit.v3.RateLimitService")
        method = service.methods_by_name["ShouldRateLimit"]
        assert method.input_type.full_name == "envoy.service.ratelimit.v3.RateLimitRequest"
        assert [f.number for f in method.input_type.fields] == [1, 2, 3]


def test_health_watch_streams_not_serving_at_sigterm(
    ratelimitd: RatelimitdFactory, write_config: Callable[..., Path]
) -> None:
    server = ratelimitd(write_config(CONFIG))  # Watch (streaming): the grpc transport only
    with grpc.insecure_channel(server.grpc_target) as channel:
        request = health_pb2.HealthCheckRequest(
            service="envoy.service.ratelimit.v3.RateLimitService"
        )
        updates = health_pb2_grpc.HealthStub(channel).Watch(request, timeout=20)
        assert next(updates).status == health_pb2.HealthCheckResponse.SERVING
        server.process.send_signal(signal.SIGTERM)
        assert next(updates).status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert server.process.wait(timeout=20) == 0
