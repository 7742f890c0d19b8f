"""The Istio example is consistent with what the end-to-end tests prove: its ratelimitd config
loads, its probes hit real endpoints, and its Envoy filter and descriptors are the ones in
envoy/envoy.yaml and pass Envoy's own validation. Its ext_authz front door (mesh-ext-authz.yaml,
ext-authz.yaml) calls the same Service port, selects the same gateway, and makes ratelimitd
build the same descriptors the EnvoyFilter's actions send."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from demos.local import BOOTSTRAP
from ratelimitd.config.loader import load_config
from ratelimitd.core import extract
from ratelimitd.model.messages import HttpAttributes
from ratelimitd.model.rules import Config
from tests.conftest import REPO
from tests.envoy_process import assert_envoy_accepts

ISTIO = REPO / "envoy" / "istio"


def documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((ISTIO / name).read_text()) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def loaded_config(tmp_path: Path) -> Config:
    """The ConfigMap's config, loaded as ratelimitd loads its mount."""
    config_map = find(documents("ratelimitd.yaml"), "ConfigMap", "ratelimitd-config")
    for name, text in config_map["data"].items():
        (tmp_path / name).write_text(text)
    return load_config([tmp_path])


def patches() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    docs = documents("envoyfilter.yaml")
    (filter_patch,) = find(docs, "EnvoyFilter", "ratelimitd-filter")["spec"]["configPatches"]
    (vhost_patch,) = find(docs, "EnvoyFilter", "ratelimitd-descriptors")["spec"]["configPatches"]
    return filter_patch["patch"]["value"], vhost_patch["patch"]["value"]["rate_limits"]


def test_configmap_config_loads(tmp_path: Path) -> None:
    config = loaded_config(tmp_path)
    http_filter, _ = patches()
    assert list(config.domains) == [http_filter["typed_config"]["domain"]]


def test_deployment_serves_what_its_probes_ask_for() -> None:
    deployment = find(documents("ratelimitd.yaml"), "Deployment", "ratelimitd")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "--http-addr=0.0.0.0:8080" in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthcheck"
    assert container["livenessProbe"]["grpc"]["port"] == 8081
    mount = container["volumeMounts"][0]["mountPath"]
    assert f"--config={mount}" in container["args"]


def test_descriptors_match_the_tested_envoy_config() -> None:
    bootstrap = yaml.safe_load(BOOTSTRAP.read_text())
    manager = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    route = manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    _, rate_limits = patches()
    assert rate_limits == route["rate_limits"]


def test_envoy_validates_the_patched_filter(tmp_path: Path) -> None:
    http_filter, _ = patches()
    bootstrap = yaml.safe_load(BOOTSTRAP.read_text())
    resources = bootstrap["static_resources"]
    manager = resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    manager["http_filters"][0] = http_filter
    cluster_name = http_filter["typed_config"]["rate_limit_service"]["grpc_service"]["envoy_grpc"]
    istio_cluster = copy.deepcopy(resources["clusters"][0])
    istio_cluster["name"] = cluster_name["cluster_name"]
    istio_cluster["load_assignment"]["cluster_name"] = cluster_name["cluster_name"]
    resources["clusters"].append(istio_cluster)
    path = tmp_path / "istio-envoy.yaml"
    path.write_text(yaml.safe_dump(bootstrap))
    assert_envoy_accepts(path)


# The ext_authz front door: mesh-ext-authz.yaml (the provider), ext-authz.yaml (the policy), and
# the same ratelimitd Deployment with --authz-domain and an `extract:` section.


def provider() -> dict[str, Any]:
    (operator,) = documents("mesh-ext-authz.yaml")
    assert operator["kind"] == "IstioOperator"
    providers: list[dict[str, Any]] = operator["spec"]["meshConfig"]["extensionProviders"]
    (found,) = providers
    return found


def descriptors_of_actions(
    rate_limits: list[dict[str, Any]], request: HttpAttributes
) -> list[list[tuple[str, str]]]:
    """What Envoy's rate_limits actions of envoyfilter.yaml make of `request` (its kinds only)."""
    made = []
    for rate_limit in rate_limits:
        entries = []
        for action in rate_limit["actions"]:
            if "request_headers" in action:
                spec = action["request_headers"]
                value = request.headers.get(spec["header_name"])
                key = spec["descriptor_key"]
            else:
                assert action == {"remote_address": {}}, action
                value, key = request.source_address, "remote_address"
            if value is None:
                break
            entries.append((key, value))
        else:
            made.append(entries)
    return made


@pytest.mark.parametrize(
    "headers",
    [
        {"x-tenant-id": "t1", "x-api-key": "k1"},
        {"x-tenant-id": "acme"},
        {"x-api-key": "k2"},
        {},
    ],
)
def test_extract_builds_the_descriptors_of_the_envoyfilter(
    tmp_path: Path, headers: dict[str, str]
) -> None:
    """Both front doors send ratelimitd the same descriptors for the same request."""
    domain = loaded_config(tmp_path).domains["edge"]
    path = "/slow?page=2"
    request = HttpAttributes(
        method="GET",
        path=path,
        headers={":path": path, ":method": "GET", **headers},
        source_address="10.1.2.3",
    )
    _, rate_limits = patches()
    extracted = [list(d.entries) for d in extract.descriptors(domain, request)]
    assert extracted == descriptors_of_actions(rate_limits, request)


def test_deployment_names_the_domain_of_check_calls(tmp_path: Path) -> None:
    deployment = find(documents("ratelimitd.yaml"), "Deployment", "ratelimitd")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (flag,) = [arg for arg in container["args"] if arg.startswith("--authz-domain=")]
    domain = loaded_config(tmp_path).domains[flag.partition("=")[2]]
    assert domain.extract


def test_provider_points_at_the_ratelimitd_grpc_port() -> None:
    manifests = documents("ratelimitd.yaml")
    service = find(manifests, "Service", "ratelimitd")
    grpc = provider()["envoyExtAuthzGrpc"]
    namespace = service["metadata"]["namespace"]
    assert grpc["service"] == f"{service['metadata']['name']}.{namespace}.svc.cluster.local"
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == grpc["port"]]
    assert port["appProtocol"] == "grpc"
    # The same port the EnvoyFilter's rate limit filter calls.
    http_filter, _ = patches()
    envoy_grpc = http_filter["typed_config"]["rate_limit_service"]["grpc_service"]["envoy_grpc"]
    assert envoy_grpc["cluster_name"] == f"outbound|{grpc['port']}||{grpc['service']}"
    assert set(grpc) <= {
        "service",
        "port",
        "timeout",
        "failOpen",
        "statusOnError",
        "includeRequestBodyInCheck",
    }


def test_policy_sends_the_gateway_to_the_provider() -> None:
    (policy,) = documents("ext-authz.yaml")
    assert policy["kind"] == "AuthorizationPolicy"
    assert policy["apiVersion"] == "security.istio.io/v1"
    spec = policy["spec"]
    assert spec["action"] == "CUSTOM"
    assert spec["provider"] == {"name": provider()["name"]}
    envoy_filter = find(documents("envoyfilter.yaml"), "EnvoyFilter", "ratelimitd-filter")
    assert spec["selector"]["matchLabels"] == envoy_filter["spec"]["workloadSelector"]["labels"]
    assert spec["rules"]


def test_envoy_validates_the_ext_authz_filter_istio_builds(tmp_path: Path) -> None:
    """The provider as istiod turns it into the gateway's ext_authz filter (the fields it sets
    from envoyExtAuthzGrpc), in envoy/envoy.yaml in place of the rate limit filter."""
    grpc = provider()["envoyExtAuthzGrpc"]
    cluster_name = f"outbound|{grpc['port']}||{grpc['service']}"
    ext_authz = {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "grpc_service": {
                "envoy_grpc": {
                    "cluster_name": cluster_name,
                    "authority": cluster_name.replace("|", "_."),
                },
                "timeout": grpc["timeout"],
            },
            "failure_mode_allow": grpc["failOpen"],
            "status_on_error": {"code": int(grpc["statusOnError"])},
        },
    }
    bootstrap = yaml.safe_load(BOOTSTRAP.read_text())
    resources = bootstrap["static_resources"]
    manager = resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    manager["http_filters"][0] = ext_authz
    route = manager["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    del route["rate_limits"]
    istio_cluster = copy.deepcopy(resources["clusters"][0])
    istio_cluster["name"] = istio_cluster["load_assignment"]["cluster_name"] = cluster_name
    resources["clusters"].append(istio_cluster)
    path = tmp_path / "istio-ext-authz-envoy.yaml"
    path.write_text(yaml.safe_dump(bootstrap))
    assert_envoy_accepts(path)
