"""The shipped Envoy bootstraps of envoy/ made runnable on loopback, for the demos, the
end-to-end tests and bench/: the admin and ingress listener moved from 0.0.0.0 to local ports,
the `ratelimitd` cluster pointed at a given address, and the application cluster (`upstream`,
or `llm` for envoy/llm-quota/) at a stand-in listener added to the same Envoy. Nothing else of
the shipped file changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ENVOY_DIR = Path(__file__).resolve().parent.parent / "envoy"
BOOTSTRAP = ENVOY_DIR / "envoy.yaml"
HOST = "127.0.0.1"

# What each application stand-in answers, by the name of the cluster it replaces: `upstream`
# says hello; `llm`, a model server, reports as `x-tokens-used` the usage the request names in
# `x-usage` (no header when the request has none), where a real one reports what it used.
STAND_IN_ROUTES: dict[str, dict[str, Any]] = {
    "upstream": {"direct_response": {"status": 200, "body": {"inline_string": "hello\n"}}},
    "llm": {
        "direct_response": {"status": 200, "body": {"inline_string": "completion\n"}},
        "response_headers_to_add": [
            {"header": {"key": "x-tokens-used", "value": "%REQ(x-usage)%"}}
        ],
    },
}


def local_bootstrap(
    *,
    ingress_port: int,
    admin_port: int,
    ratelimitd: tuple[str, int],
    upstream_port: int,
    source: Path = BOOTSTRAP,
) -> dict[str, Any]:
    """The shipped bootstrap at `source` (clusters `ratelimitd` and one application cluster
    named in STAND_IN_ROUTES, one ingress listener) on local ports, calling ratelimitd at
    `ratelimitd` (host, port), its application a stand-in listening on `upstream_port`."""
    doc: dict[str, Any] = yaml.safe_load(source.read_text())
    local = {"address": HOST}
    doc["admin"]["address"]["socket_address"] = local | {"port_value": admin_port}
    resources = doc["static_resources"]
    (ingress,) = resources["listeners"]
    ingress["address"]["socket_address"] = local | {"port_value": ingress_port}
    (application,) = [c["name"] for c in resources["clusters"] if c["name"] != "ratelimitd"]
    addresses = {"ratelimitd": ratelimitd, application: (HOST, upstream_port)}
    for cluster in resources["clusters"]:
        host, port = addresses[cluster["name"]]
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        endpoint["address"]["socket_address"] = {"address": host, "port_value": port}
    resources["listeners"].append(stand_in(doc, application, upstream_port))
    return doc


def stand_in(doc: dict[str, Any], application: str, port: int) -> dict[str, Any]:
    """A listener on `port` answering every request as STAND_IN_ROUTES says for the cluster
    named `application`."""
    manager = ingress_manager(doc)
    route = {"match": {"prefix": "/"}, **STAND_IN_ROUTES[application]}
    return {
        "name": application,
        "address": {"socket_address": {"address": HOST, "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": manager["@type"],
                            "stat_prefix": application,
                            "route_config": {
                                "virtual_hosts": [
                                    {"name": application, "domains": ["*"], "routes": [route]}
                                ]
                            },
                            "http_filters": [manager["http_filters"][-1]],  # the router
                        },
                    }
                ]
            }
        ],
    }


def ingress_manager(doc: dict[str, Any]) -> dict[str, Any]:
    """The HTTP connection manager of the shipped ingress listener."""
    ingress = doc["static_resources"]["listeners"][0]
    manager: dict[str, Any] = ingress["filter_chains"][0]["filters"][0]["typed_config"]
    return manager


def ratelimit_filter(doc: dict[str, Any]) -> dict[str, Any]:
    """The typed_config of the rate limit filter of the ingress listener."""
    (found,) = [f for f in ingress_manager(doc)["http_filters"] if f["name"].endswith(".ratelimit")]
    config: dict[str, Any] = found["typed_config"]
    return config


def quota_filter(domain: str, header: str, client: str | None = None) -> dict[str, Any]:
    """A rate_limit_quota filter asking the `ratelimitd` cluster for `domain`'s assignments:
    one bucket {tenant: <the request's `header`>}, every request admitted until its first
    assignment; `client` names this Envoy to ratelimitd (x-rlqs-client), else its address
    does. Envoy 1.39 reports every 5 s whatever reporting_interval says."""
    tenant = {
        "name": "tenant",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
            "header_name": header,
        },
    }
    settings = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rate_limit_quota.v3."
        "RateLimitQuotaBucketSettings",
        "bucket_id_builder": {"bucket_id_builder": {"tenant": {"custom_value": tenant}}},
        "reporting_interval": "5s",
        "no_assignment_behavior": {"fallback_rate_limit": {"blanket_rule": "ALLOW_ALL"}},
    }
    server: dict[str, Any] = {"envoy_grpc": {"cluster_name": "ratelimitd"}}
    if client is not None:
        server["initial_metadata"] = [{"key": "x-rlqs-client", "value": client}]
    return {
        "name": "envoy.filters.http.rate_limit_quota",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rate_limit_quota.v3."
            "RateLimitQuotaFilterConfig",
            "rlqs_server": server,
            "domain": domain,
            "bucket_matchers": {
                "on_no_match": {"action": {"name": "tenant_bucket", "typed_config": settings}}
            },
        },
    }
