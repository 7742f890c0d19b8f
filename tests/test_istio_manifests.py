"""The Istio example is consistent with what the end-to-end tests prove: its ratelimitd config
loads, its probes hit real endpoints, and its Envoy filter and descriptors are the ones in
envoy/envoy.yaml and pass Envoy's own validation."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import yaml

from ratelimitd.config.loader import load_config
from tests.conftest import REPO
from tests.envoy_local import BOOTSTRAP
from tests.test_envoy_e2e import ENVOY

ISTIO = REPO / "envoy" / "istio"


def documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((ISTIO / name).read_text()) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def patches() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    docs = documents("envoyfilter.yaml")
    (filter_patch,) = find(docs, "EnvoyFilter", "ratelimitd-filter")["spec"]["configPatches"]
    (vhost_patch,) = find(docs, "EnvoyFilter", "ratelimitd-descriptors")["spec"]["configPatches"]
    return filter_patch["patch"]["value"], vhost_patch["patch"]["value"]["rate_limits"]


def test_configmap_config_loads(tmp_path: Path) -> None:
    config_map = find(documents("ratelimitd.yaml"), "ConfigMap", "ratelimitd-config")
    for name, text in config_map["data"].items():
        (tmp_path / name).write_text(text)
    config = load_config([tmp_path])
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
    result = subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
