"""Redis faults against real redis-server processes: hung (SIGSTOP), killed, restarted,
paused (CLIENT PAUSE). During each, every decision comes back within the store timeout (plus
a little) by each rule's failure mode; after recovery, decisions come from Redis again within
a second, without a restart of ratelimitd."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from ratelimitd.config.loader import load_config
from ratelimitd.engine import Engine
from ratelimitd.messages import Code, Decision, Descriptor, Request, Result
from ratelimitd.storage.breaker import BreakerState, CircuitBreaker
from ratelimitd.storage.redis import RedisStore
from tests.conftest import RatelimitdFactory, RedisServer, start_redis, wait_until

TIMEOUT_S = 0.05
# The store timeout plus what a busy 2-core machine adds around it.
BOUND_S = TIMEOUT_S + 0.020

CONFIG = """
domain: f
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 100, failure_mode: allow}
  - key: api_key
    rate_limit: {unit: minute, requests_per_unit: 100, failure_mode: deny}
"""
BOTH = (Descriptor((("tenant", "t"),)), Descriptor((("api_key", "k"),)))


class Service:
    """An engine on a breaker-guarded Redis store, driven synchronously, timing each call."""

    def __init__(
        self, own_redis: RedisServer, config: Path, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.loop = loop
        self.breaker = CircuitBreaker(cooldown_s=0.5)
        self.store = RedisStore(own_redis.url, timeout=TIMEOUT_S, breaker=self.breaker)
        self.engine = Engine(load_config([config]), self.store)

    def decide(self) -> tuple[Decision, float]:
        started = time.perf_counter()
        decision = self.loop.run_until_complete(self.engine.should_rate_limit(Request("f", BOTH)))
        return decision, time.perf_counter() - started

    def burst(self, n: int) -> list[Decision]:
        async def many() -> list[Decision]:
            calls = (self.engine.should_rate_limit(Request("f", BOTH)) for _ in range(n))
            return await asyncio.gather(*calls)

        return self.loop.run_until_complete(many())


def by_failure_modes(decision: Decision) -> bool:
    """The answer the rules' failure modes give: tenant allowed, api key denied."""
    tenant, key = decision.statuses
    return (tenant.result, key.result, decision.code) == (
        Result.FAILURE_ALLOWED,
        Result.FAILURE_DENIED,
        Code.OVER_LIMIT,
    )


def from_redis(decision: Decision) -> bool:
    return all(s.result is Result.WITHIN_LIMIT for s in decision.statuses)


def assert_fast_failure_modes(service: Service) -> None:
    """Every decision by failure mode, each within the bound (a scheduling hiccup of the
    machine is tolerated for one in twenty, never beyond ten times the timeout)."""
    timed = [service.decide() for _ in range(40)]
    assert all(by_failure_modes(d) for d, _ in timed)
    latencies = sorted(t for _, t in timed)
    assert latencies[int(len(latencies) * 0.95)] <= BOUND_S, latencies
    assert latencies[-1] <= 10 * TIMEOUT_S, latencies
    assert all(by_failure_modes(d) for d in service.burst(50))
    assert service.breaker.state is not BreakerState.CLOSED


def assert_recovers_within_a_second(service: Service) -> None:
    deadline = time.monotonic() + 1.0
    while not from_redis(service.decide()[0]):
        assert time.monotonic() < deadline, "decisions did not come from Redis again in 1 s"
        time.sleep(0.01)
    assert service.breaker.state is BreakerState.CLOSED


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "f.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def service(
    own_redis: RedisServer, config: Path, loop: asyncio.AbstractEventLoop
) -> Iterator[Service]:
    svc = Service(own_redis, config, loop)
    assert from_redis(svc.decide()[0])
    yield svc
    loop.run_until_complete(svc.store.close())


def test_hung_redis(own_redis: RedisServer, service: Service) -> None:
    os.kill(own_redis.process.pid, signal.SIGSTOP)
    assert_fast_failure_modes(service)
    os.kill(own_redis.process.pid, signal.SIGCONT)
    assert_recovers_within_a_second(service)


def test_killed_and_restarted_redis(
    own_redis: RedisServer, service: Service, tmp_path: Path
) -> None:
    own_redis.process.kill()
    own_redis.process.wait(timeout=10)
    assert_fast_failure_modes(service)
    restarted = start_redis(tmp_path, port=own_redis.port)  # empty script cache: NOSCRIPT path
    try:
        assert_recovers_within_a_second(service)
    finally:
        restarted.process.terminate()
        restarted.process.wait(timeout=10)


def test_paused_redis(own_redis: RedisServer, service: Service) -> None:
    own_redis.client().client_pause(1500, all=True)
    assert_fast_failure_modes(service)
    wait_until(lambda: own_redis.client().ping(), 5, "the pause to end")
    assert_recovers_within_a_second(service)


def test_open_circuit_answers_without_waiting(own_redis: RedisServer, service: Service) -> None:
    os.kill(own_redis.process.pid, signal.SIGSTOP)
    for _ in range(5):
        service.decide()  # each waits out the timeout and counts as a failure
    assert service.breaker.state is BreakerState.OPEN
    latencies = [service.decide()[1] for _ in range(20)]
    assert statistics.median(latencies) < TIMEOUT_S / 5


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
