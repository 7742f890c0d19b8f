"""Graceful shutdown: on SIGTERM a server stops being ready at once, answers what it already
accepted, takes no new work, and exits within --drain-timeout."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from tests.conftest import RatelimitdFactory, RedisServer, wait_until

CONFIG = (
    "domain: s\ndescriptors: [{key: tenant, rate_limit: {unit: minute, requests_per_unit: 9}}]\n"
)
REQUEST = rls_pb2.RateLimitRequest(
    domain="s",
    descriptors=[
        ratelimit_pb2.RateLimitDescriptor(
            entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key="tenant", value="t")]
        )
    ],
)


@pytest.mark.parametrize("transport", ["grpc", "asgi"])
def test_requests_in_flight_finish_and_new_work_is_refused(
    ratelimitd: RatelimitdFactory,
    own_redis: RedisServer,
    write_config: Callable[..., Path],
    transport: str,
) -> None:
    server = ratelimitd(
        write_config(CONFIG),
        "--redis-timeout",
        "10",
        "--drain-timeout",
        "15",
        redis_url=own_redis.url,
        transport=transport,
    )
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        assert stub.ShouldRateLimit(REQUEST, timeout=5).overall_code == rls_pb2.RateLimitResponse.OK
        os.kill(own_redis.process.pid, signal.SIGSTOP)  # the next request waits inside Redis
        in_flight = stub.ShouldRateLimit.future(REQUEST, timeout=30)
        time.sleep(0.5)  # let it reach the server; nothing observable marks that moment
        server.process.send_signal(signal.SIGTERM)

        # Not ready at once; no new work taken on.
        wait_until(lambda: server.http("/healthcheck")[0] != 200, 5, "/healthcheck to fail")
        with (
            grpc.insecure_channel(server.grpc_target) as fresh,
            pytest.raises(grpc.RpcError) as refused,
        ):
            rls_pb2_grpc.RateLimitServiceStub(fresh).ShouldRateLimit(REQUEST, timeout=3)
        # Refused either way: UNAVAILABLE once the listener is closed, CANCELLED from gRPC core
        # for a connection the kernel accepted just before it closed.
        assert refused.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)

        os.kill(own_redis.process.pid, signal.SIGCONT)
        answer = in_flight.result(timeout=20)
        assert answer.overall_code == rls_pb2.RateLimitResponse.OK
        assert answer.statuses[0].limit_remaining == 7  # really evaluated by Redis
    assert server.process.wait(timeout=20) == 0
