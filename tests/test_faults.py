"""Redis faults against real redis-server processes and a real `ratelimitd serve`: hung
(SIGSTOP), killed, restarted, paused (CLIENT PAUSE). During each, every answer comes by each
rule's failure mode, and none waits on Redis (each within the store timeout plus a second,
where waiting would take the fault's whole length); once Redis is back, answers come from it
again, without a restart of ratelimitd. Only the served answers are looked at. How fast the
answers are is measured in bench/, not here."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from tests.conftest import RatelimitdFactory, RedisServer, start_redis, wait_until

TIMEOUT_S = 0.05
# A loaded machine delays an answer by a fraction of this; a call waiting on the faulty Redis
# takes as long as the fault lasts (DEADLINE_EXCEEDED fails the test).
ANSWER_WITHIN_S = TIMEOUT_S + 1.0
COOLDOWN_S = 0.5
RECOVERY_S = 20 * COOLDOWN_S

OK = rls_pb2.RateLimitResponse.OK
OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT
CONFIG = """
domain: f
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 100, failure_mode: allow}
  - key: api_key
    rate_limit: {unit: minute, requests_per_unit: 100, failure_mode: deny}
"""
BOTH = rls_pb2.RateLimitRequest(
    domain="f",
    descriptors=[
        ratelimit_pb2.RateLimitDescriptor(
            entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=key, value=value)]
        )
        for key, value in (("tenant", "t"), ("api_key", "k"))
    ],
)


def codes(answer: rls_pb2.RateLimitResponse) -> tuple[int, ...]:
    """The overall code, then each descriptor's."""
    return (answer.overall_code, *(status.code for status in answer.statuses))


BY_FAILURE_MODES = (OVER_LIMIT, OK, OVER_LIMIT)  # tenant allowed, api key denied
FROM_REDIS = (OK, OK, OK)  # both well within their limits


class Client:
    """Asks the server about both descriptors, each answer due within ANSWER_WITHIN_S."""

    def __init__(self, stub: rls_pb2_grpc.RateLimitServiceStub) -> None:
        self._stub = stub

    def codes(self) -> tuple[int, ...]:
        return codes(self._stub.ShouldRateLimit(BOTH, timeout=ANSWER_WITHIN_S))

    def burst(self, n: int) -> list[tuple[int, ...]]:
        """`n` calls at once."""
        calls = [self._stub.ShouldRateLimit.future(BOTH, timeout=ANSWER_WITHIN_S) for _ in range(n)]
        return [codes(call.result()) for call in calls]


def assert_answered_by_failure_modes(client: Client) -> None:
    """One after another (the first ones wait out the store timeout, until the circuit
    opens), then many at once: all by the rules' failure modes, none waiting on Redis."""
    assert [client.codes() for _ in range(40)] == [BY_FAILURE_MODES] * 40
    assert client.burst(50) == [BY_FAILURE_MODES] * 50


def assert_recovers(client: Client) -> None:
    wait_until(lambda: client.codes() == FROM_REDIS, RECOVERY_S, "answers from Redis again")


@pytest.fixture
def client(
    ratelimitd: RatelimitdFactory, own_redis: RedisServer, write_config: Callable[..., Path]
) -> Iterator[Client]:
    server = ratelimitd(
        write_config(CONFIG),
        "--redis-timeout",
        str(TIMEOUT_S),
        "--breaker-cooldown",
        str(COOLDOWN_S),
        redis_url=own_redis.url,
    )
    with grpc.insecure_channel(server.grpc_target) as channel:
        ready = Client(rls_pb2_grpc.RateLimitServiceStub(channel))
        assert ready.codes() == FROM_REDIS
        yield ready


def test_hung_redis(own_redis: RedisServer, client: Client) -> None:
    os.kill(own_redis.process.pid, signal.SIGSTOP)
    assert_answered_by_failure_modes(client)
    os.kill(own_redis.process.pid, signal.SIGCONT)
    assert_recovers(client)


def test_killed_and_restarted_redis(own_redis: RedisServer, client: Client, tmp_path: Path) -> None:
    own_redis.process.kill()
    own_redis.process.wait(timeout=10)
    assert_answered_by_failure_modes(client)
    restarted = start_redis(tmp_path, port=own_redis.port)  # empty script cache: NOSCRIPT path
    try:
        assert_recovers(client)
    finally:
        restarted.process.terminate()
        restarted.process.wait(timeout=10)


def test_paused_redis(own_redis: RedisServer, client: Client) -> None:
    admin = own_redis.client()
    # WRITE pauses every script call (ours included) but lets CLIENT UNPAUSE through, so the
    # pause lasts exactly as long as the test needs it to.
    admin.client_pause(60_000, all=False)
    try:
        assert_answered_by_failure_modes(client)
    finally:
        admin.client_unpause()
    assert_recovers(client)


@pytest.mark.parametrize("transport", ["grpc", "asgi"])
def test_failure_mode_unavailable_lets_envoy_decide(
    ratelimitd: RatelimitdFactory,
    own_redis: RedisServer,
    write_config: Callable[..., Path],
    transport: str,
) -> None:
    path = write_config("domain: f\ndescriptors: [{key: tenant, rate_limit: {unit: second}}]\n")
    server = ratelimitd(
        path, "--failure-mode", "unavailable", redis_url=own_redis.url, transport=transport
    )
    own_redis.process.kill()
    own_redis.process.wait(timeout=10)
    request = rls_pb2.RateLimitRequest(
        domain="f",
        descriptors=[
            ratelimit_pb2.RateLimitDescriptor(
                entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key="tenant", value="t")]
            )
        ],
    )
    with (
        grpc.insecure_channel(server.grpc_target) as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(request, timeout=5)
    error: grpc.Call = caught.value  # type: ignore[assignment]
    assert error.code() == grpc.StatusCode.UNAVAILABLE
