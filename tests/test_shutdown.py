"""Graceful shutdown: on SIGTERM a server stops being ready at once, answers what it already
accepted, takes no new work, and exits as soon as that is done: at once when idle, within
--drain-timeout at most."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from tests.conftest import Ratelimitd, RatelimitdFactory, RedisServer, wait_until

CONFIG = (
    "domain: s\ndescriptors: [{key: tenant, rate_limit: {unit: minute, requests_per_unit: 9}}]\n"
)
# An idle server exits about 0.1 s after SIGTERM (the asgi transport: Envoy's admin API says no
# request is in flight, then Envoy exits); this leaves a loaded machine 10x, yet catches a
# server that waits out its --drain-timeout of 5 s.
IDLE_EXIT_S = 1.5
# A busy one exits once its in-flight calls are answered, well inside the drain timeout.
DRAINED_EXIT_S = 5.0
REQUEST = rls_pb2.RateLimitRequest(
    domain="s",
    descriptors=[
        ratelimit_pb2.RateLimitDescriptor(
            entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key="tenant", value="t")]
        )
    ],
)


def unread_bytes(redis_server: RedisServer) -> int:
    """Bytes clients sent to `redis_server` that it has not read yet (Linux: the receive
    queues of its established connections in /proc/net/tcp): what a stopped Redis holds."""
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rpartition(":")[2], 16)
        if local_port == redis_server.port and fields[3] == "01":  # ESTABLISHED
            total += int(fields[4].partition(":")[2], 16)
    return total


def exits_within(server: Ratelimitd, seconds: float) -> int:
    """The server's exit status, failing the test unless it exits within `seconds`."""
    try:
        return server.process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {seconds} s after it had nothing left to answer")


@pytest.mark.parametrize("transport", ["grpc", "asgi"])
def test_an_idle_server_exits_at_once(
    ratelimitd: RatelimitdFactory, write_config: Callable[..., Path], transport: str
) -> None:
    server = ratelimitd(write_config(CONFIG), transport=transport)
    server.process.send_signal(signal.SIGTERM)
    assert exits_within(server, IDLE_EXIT_S) == 0


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
        wait_until(lambda: unread_bytes(own_redis) > 0, 10, "the request to wait inside Redis")
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
    assert exits_within(server, DRAINED_EXIT_S) == 0


@pytest.mark.parametrize("transport", ["grpc", "asgi"])
def test_a_call_that_outlasts_the_drain_timeout_does_not_hold_the_exit(
    ratelimitd: RatelimitdFactory,
    own_redis: RedisServer,
    write_config: Callable[..., Path],
    transport: str,
) -> None:
    drain_timeout = 1.0
    server = ratelimitd(
        write_config(CONFIG),
        "--redis-timeout",
        "60",
        "--drain-timeout",
        str(drain_timeout),
        redis_url=own_redis.url,
        transport=transport,
    )
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        os.kill(own_redis.process.pid, signal.SIGSTOP)  # stays stopped: the call never ends
        in_flight = stub.ShouldRateLimit.future(REQUEST, timeout=30)
        wait_until(lambda: unread_bytes(own_redis) > 0, 10, "the request to wait inside Redis")
        server.process.send_signal(signal.SIGTERM)
        exits_within(server, drain_timeout + DRAINED_EXIT_S)
        assert in_flight.exception(timeout=10) is not None  # cut, not answered
