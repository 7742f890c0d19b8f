"""envoy/envoy.yaml made runnable on loopback, for the end-to-end tests and bench/: its
listener, admin and clusters moved to local ports, and an `upstream` listener answering 200
directly in place of the application. Nothing else of the shipped file changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

BOOTSTRAP = Path(__file__).resolve().parent.parent / "envoy" / "envoy.yaml"
HOST = "127.0.0.1"


def local_bootstrap(
    *,
    ingress_port: int,
    admin_port: int,
    ratelimitd: tuple[str, int],
    upstream_port: int,
    source: Path = BOOTSTRAP,
) -> dict[str, Any]:
    """envoy/envoy.yaml (or another shipped bootstrap of the same shape: clusters `ratelimitd`
    and `upstream`, one ingress listener) on local ports, calling ratelimitd at `ratelimitd`
    (host, port)."""
    doc: dict[str, Any] = yaml.safe_load(source.read_text())
    local = {"address": HOST}
    doc["admin"]["address"]["socket_address"] = local | {"port_value": admin_port}
    resources = doc["static_resources"]
    (ingress,) = resources["listeners"]
    ingress["address"]["socket_address"] = local | {"port_value": ingress_port}
    addresses = {"ratelimitd": ratelimitd, "upstream": (HOST, upstream_port)}
    for cluster in resources["clusters"]:
        host, port = addresses[cluster["name"]]
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        endpoint["address"]["socket_address"] = {"address": host, "port_value": port}
    manager = ingress_manager(doc)
    resources["listeners"].append(
        {
            "name": "upstream",
            "address": {"socket_address": local | {"port_value": upstream_port}},
            "filter_chains": [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": {
                                "@type": manager["@type"],
                                "stat_prefix": "upstream",
                                "route_config": {
                                    "virtual_hosts": [
                                        {
                                            "name": "upstream",
                                            "domains": ["*"],
                                            "routes": [
                                                {
                                                    "match": {"prefix": "/"},
                                                    "direct_response": {
                                                        "status": 200,
                                                        "body": {"inline_string": "hello\n"},
                                                    },
                                                }
                                            ],
                                        }
                                    ]
                                },
                                "http_filters": [manager["http_filters"][-1]],  # the router
                            },
                        }
                    ]
                }
            ],
        }
    )
    return doc


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
