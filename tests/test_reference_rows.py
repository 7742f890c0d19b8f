"""Issue 16's rows, end to end through `ratelimitd serve` and Envoy's own client (xds-protos):
per-descriptor verdicts when the local over-limit cache answers (for every algorithm, on
Redis with --local-cache-size), QUOTA_MODE and quota_mode, the reference's header choice,
and the reference's settings that ratelimitd reports at startup."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from ratelimitd.algorithms import ALGORITHMS
from tests.conftest import Ratelimitd, RatelimitdFactory, RedisServer, free_port

OK = rls_pb2.RateLimitResponse.OK
OVER = rls_pb2.RateLimitResponse.OVER_LIMIT

CONFIG = (
    "domain: rows\ndescriptors:\n"
    + "".join(
        f"""  - key: one_{name}
    rate_limit: {{unit: minute, requests_per_unit: 1, algorithm: {name}}}
  - key: zero_{name}
    rate_limit: {{unit: minute, requests_per_unit: 0, algorithm: {name}}}
"""
        for name in sorted(ALGORITHMS)
    )
    + """  - key: open
    rate_limit: {unit: minute, requests_per_unit: 100}
  - key: backend
    value: primary
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1, name: primary}
  - key: backend
    value: fallback
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 5, name: fallback}
"""
)

Answer = tuple[int, list[tuple[int, int]]]  # overall code, (code, remaining) per descriptor


class Client:
    def __init__(self, stub: rls_pb2_grpc.RateLimitServiceStub) -> None:
        self.stub = stub

    def call(self, *pairs: tuple[str, str]) -> rls_pb2.RateLimitResponse:
        descriptors = [
            ratelimit_pb2.RateLimitDescriptor(
                entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v)]
            )
            for k, v in pairs
        ]
        request = rls_pb2.RateLimitRequest(domain="rows", descriptors=descriptors)
        response: rls_pb2.RateLimitResponse = self.stub.ShouldRateLimit(request, timeout=5)
        return response

    def ask(self, *pairs: tuple[str, str]) -> Answer:
        response = self.call(*pairs)
        return response.overall_code, [(s.code, s.limit_remaining) for s in response.statuses]


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rows") / "rows.yaml"
    path.write_text(CONFIG)
    return path


def client_of(server: Ratelimitd) -> Iterator[Client]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield Client(rls_pb2_grpc.RateLimitServiceStub(channel))


@pytest.fixture(scope="module")
def cached(
    module_ratelimitd: RatelimitdFactory, redis_server: RedisServer, config_path: Path
) -> Iterator[Client]:
    """On Redis, with the over-limit cache on and the reference's headers."""
    redis_server.client().flushall()
    server = module_ratelimitd(
        config_path,
        "--local-cache-size",
        "1000",
        "--response-headers",
        "legacy",
        redis_url=redis_server.url,
    )
    yield from client_of(server)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_a_request_answered_with_a_cached_rejection_gets_every_verdict(
    cached: Client, algorithm: str
) -> None:
    one, zero = (f"one_{algorithm}", "a"), (f"zero_{algorithm}", "a")
    assert cached.ask(one)[0] == OK
    assert cached.ask(one) == (OVER, [(OVER, 0)])  # now in the cache
    # Issue 16: the others read OK (remaining 0) when the cache answered, even 0 per minute.
    assert cached.ask(one, zero, ("open", algorithm)) == (OVER, [(OVER, 0), (OVER, 0), (OK, 100)])
    assert cached.ask(zero, one) == (OVER, [(OVER, 0), (OVER, 0)])  # both cached now
    assert cached.ask(("open", algorithm)) == (OK, [(OK, 99)])  # nothing was consumed


def test_the_reference_headers_name_the_last_exceeded_descriptor(cached: Client) -> None:
    cached.ask(("one_gcra", "h"))
    response = cached.call(("open", "h"), ("one_gcra", "h"), ("zero_gcra", "h"))
    headers = {h.key: h.value for h in response.response_headers_to_add}
    assert response.overall_code == OVER
    assert (headers["RateLimit-Limit"], headers["RateLimit-Remaining"]) == ("0", "0")


def test_quota_mode_descriptors_fall_back(cached: Client) -> None:
    primary, fallback = ("backend", "primary"), ("backend", "fallback")
    assert cached.ask(primary, fallback) == (OK, [(OK, 0), (OK, 4)])
    assert cached.ask(primary, fallback) == (OK, [(OVER, 0), (OK, 3)])
    assert cached.ask(primary) == (OVER, [(OVER, 0)])


@pytest.fixture(scope="module", params=["memory", "redis"])
def reference_quota_mode(
    request: pytest.FixtureRequest,
    module_ratelimitd: RatelimitdFactory,
    redis_server: RedisServer,
    config_path: Path,
) -> Iterator[tuple[Ratelimitd, Client]]:
    """Started the reference's way, QUOTA_MODE=true among its variables."""
    grpc_port, http_port = free_port(), free_port()
    environment = {
        "RUNTIME_ROOT": str(config_path.parent),
        "RUNTIME_SUBDIRECTORY": "",
        "RUNTIME_APPDIRECTORY": ".",
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(grpc_port),
        "HOST": "127.0.0.1",
        "PORT": str(http_port),
        "QUOTA_MODE": "true",
        "REDIS_STARTUP_MAX_RETRIES": "5",
        "PROMETHEUS_RESPONSE_TIME_AS_MILLISECONDS": "true",
    }
    if request.param == "redis":
        redis_server.client().flushall()
        environment |= {"REDIS_URL": f"127.0.0.1:{redis_server.port}", "REDIS_TYPE": "single"}
    server = module_ratelimitd.launch(
        ["--transport", "grpc", "--workers", "1"],
        grpc_port=grpc_port,
        http_port=http_port,
        env=environment,
    )
    for client in client_of(server):
        yield server, client


def test_quota_mode_env_makes_every_descriptor_a_quota(
    reference_quota_mode: tuple[Ratelimitd, Client],
) -> None:
    _, client = reference_quota_mode
    zero, open_ = ("zero_fixed_window", "q"), ("open", "q")
    assert client.ask(zero, open_) == (OK, [(OVER, 0), (OK, 99)])
    assert client.ask(zero, ("nothing", "q")) == (OK, [(OVER, 0), (OK, 0)])  # unmatched passes
    assert client.ask(zero) == (OVER, [(OVER, 0)])


def test_settings_without_an_equivalent_are_a_startup_warning(
    reference_quota_mode: tuple[Ratelimitd, Client],
) -> None:
    server, _ = reference_quota_mode
    (note,) = server.events("reference_environment")
    assert note["level"] == "warning"
    assert note["read"]["QUOTA_MODE"] == "RATELIMITD_QUOTA_MODE=true"
    assert set(note["ignored"]) >= {
        "REDIS_STARTUP_MAX_RETRIES",
        "PROMETHEUS_RESPONSE_TIME_AS_MILLISECONDS",
    }
    assert "serve starts without waiting for Redis" in note["ignored"]["REDIS_STARTUP_MAX_RETRIES"]
