"""Exactness under concurrency: many clients racing on one limit admit exactly the limit,
through 4 server processes sharing one Redis and through the store directly."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from ratelimitd.algorithms import ALGORITHMS, Hit
from ratelimitd.model.rules import Limit, Unit
from ratelimitd.storage.redis import RedisStore
from tests.conftest import RatelimitdFactory, wait_until

LIMIT = 50
REQUESTS = 200
PROCESSES = 4
CONFIG = f"""
domain: race
descriptors:
  - key: tenant
    rate_limit: {{unit: day, requests_per_unit: {LIMIT}}}
"""


def test_four_servers_sharing_redis_admit_exactly_the_limit(
    ratelimitd: RatelimitdFactory, redis_url: str, write_config: Callable[..., Path]
) -> None:
    config = write_config(CONFIG)
    servers = [ratelimitd(config, redis_url=redis_url, wait=False) for _ in range(PROCESSES)]
    for server in servers:
        wait_until(lambda s=server: _ready(s.http), 20, "ratelimitd")  # type: ignore[misc]
    channels = [grpc.insecure_channel(s.grpc_target) for s in servers]
    try:
        stubs = [rls_pb2_grpc.RateLimitServiceStub(c) for c in channels]
        request = rls_pb2.RateLimitRequest(
            domain="race",
            descriptors=[
                ratelimit_pb2.RateLimitDescriptor(
                    entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key="tenant", value="t")]
                )
            ],
        )
        futures = [
            stubs[i % PROCESSES].ShouldRateLimit.future(request, timeout=30)
            for i in range(REQUESTS)
        ]
        codes = [f.result().overall_code for f in futures]
    finally:
        for channel in channels:
            channel.close()
    assert codes.count(rls_pb2.RateLimitResponse.OK) == LIMIT
    assert codes.count(rls_pb2.RateLimitResponse.OVER_LIMIT) == REQUESTS - LIMIT


def _ready(http: Callable[[str], tuple[int, str]]) -> bool:
    try:
        return http("/healthcheck")[0] == 200
    except OSError:
        return False


def _race(url: str, count: int, algorithm: str) -> int:
    """In a separate process: `count` concurrent calls on one key; how many were admitted."""

    async def main() -> int:
        store = RedisStore(url, timeout=10)
        # A year: no window boundary falls inside the race, so the limit is exactly LIMIT.
        limit = Limit(algorithm, LIMIT, Unit.YEAR, LIMIT)
        try:
            results = await asyncio.gather(
                *(store.apply([Hit("race-key", limit, 1)]) for _ in range(count))
            )
        finally:
            await store.close()
        return sum(outcomes[0].admitted for outcomes in results)

    return asyncio.run(main())


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_processes_racing_on_the_store_admit_exactly_the_limit(
    redis_url: str, algorithm: str
) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Pool(PROCESSES) as pool:
        jobs = [(redis_url, REQUESTS // PROCESSES, algorithm)] * PROCESSES
        admitted = pool.starmap(_race, jobs)
    assert sum(admitted) == LIMIT
