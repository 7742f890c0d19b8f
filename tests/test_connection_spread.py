"""Several workers all serve an Envoy with one worker thread. SO_REUSEPORT hands each client
connection to one worker, and Envoy sends all its calls over one HTTP/2 connection until that
connection has as many in flight as its cluster allows (max_concurrent_streams, as
envoy/envoy.yaml sets it), or the server (SETTINGS_MAX_CONCURRENT_STREAMS,
--max-streams-per-connection): then it opens another, and the connections land on every
worker."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from demos.local import HOST, local_bootstrap
from tests.conftest import (
    REPO,
    STARTUP_TIMEOUT_S,
    Ratelimitd,
    RatelimitdFactory,
    free_port,
    wait_until,
)
from tests.envoy_process import Envoy, run_envoy

# Every call is one decision on Redis, admitted: the load is the same whatever the answers.
CONFIG = """
domain: edge
descriptors:
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 1000000000}
"""
IN_FLIGHT = 64
REQUESTS = 2000
MAX_CONCURRENT_STREAMS = 0x3
ENVOY_DEFAULT = 1024  # what Envoy announces unless told otherwise; grpc announces nothing


# -- what the gRPC port announces --------------------------------------------------------------


def announced_settings(port: int) -> dict[int, int]:
    """The HTTP/2 SETTINGS the server at `port` sends first, as {identifier: value}."""
    with socket.create_connection((HOST, port), timeout=10) as sock:
        # The client preface and an empty SETTINGS frame (length 0, type 4, flags 0, stream 0).
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
        stream = sock.makefile("rb")
        header = stream.read(9)
        assert header[3] == 4, f"the server's first frame is not SETTINGS: {header!r}"
        payload = stream.read(int.from_bytes(header[:3]))
    entries = (payload[i : i + 6] for i in range(0, len(payload), 6))
    return {int.from_bytes(entry[:2]): int.from_bytes(entry[2:]) for entry in entries}


@pytest.mark.parametrize(
    ("transport", "workers", "flags", "cap", "announced"),
    [
        ("asgi", 2, [], None, ENVOY_DEFAULT),
        ("asgi", 1, ["--max-streams-per-connection", "5"], 5, 5),
        ("grpc", 2, ["--max-streams-per-connection", "16"], 16, 16),
        ("grpc", 2, [], None, None),
    ],
)
def test_the_grpc_port_announces_a_cap_only_when_set(
    ratelimitd: RatelimitdFactory,
    redis_url: str,
    write_config: Callable[..., Path],
    transport: str,
    workers: int,
    flags: list[str],
    cap: int | None,
    announced: int | None,
) -> None:
    server = ratelimitd(
        write_config(CONFIG), *flags, redis_url=redis_url, transport=transport, workers=workers
    )
    assert announced_settings(server.grpc_port).get(MAX_CONCURRENT_STREAMS) == announced
    [serving] = server.events("serving")
    assert serving["max_streams_per_connection"] == cap


# -- the Envoy config of an asgi worker, built in a process of its own (it imports protos) ----

ENVOY_CONFIG = """
import json, sys
from ratelimitd.app.settings import Settings
from ratelimitd.app.workers import cap_concurrent_streams, pyvoy_server

def options(**settings):
    config = pyvoy_server(Settings(config=(), **settings), {}).get_envoy_config()
    (listener,) = config["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (manager,) = [f for f in chain["filters"] if f["name"].endswith("http_connection_manager")]
    return manager["typed_config"].get("http2_protocol_options")

def refusal(config):
    try:
        cap_concurrent_streams(config, 16)
    except RuntimeError as exc:
        return str(exc)
    return None

print(json.dumps({
    "not set": options(redis_url="redis://r/0", workers=2),
    "set": options(workers=1, max_streams_per_connection=5),
    "no listener": refusal({"static_resources": {"listeners": []}}),
    "other shape": refusal({"listeners": []}),
}))
"""


def test_an_asgi_workers_envoy_config_carries_the_cap() -> None:
    result = subprocess.run(
        [sys.executable, "-c", ENVOY_CONFIG],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    found: dict[str, Any] = json.loads(result.stdout)
    assert found["not set"] is None  # Envoy's own default
    assert found["set"] == {"max_concurrent_streams": 5}
    # pyvoy generating its config otherwise must stop the start, not drop the cap unseen.
    assert "no envoy.filters.network.http_connection_manager" in found["no listener"]
    assert "unexpected shape" in found["other shape"]


# -- end to end: a front Envoy with one worker thread, ratelimitd with two workers ----------


def worker_pids(server: Ratelimitd, count: int) -> list[int]:
    """The pids of the worker processes (for asgi, the Envoys hosting the app)."""
    wait_until(
        lambda: len(server.events("worker_serving")) == count,
        STARTUP_TIMEOUT_S,
        f"{count} worker_serving events",
    )
    return [record["pid"] for record in server.events("worker_serving")]


def cpu_ticks(pid: int) -> int:
    """User and system CPU time process `pid` (all its threads) has used, in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()  # after the command, which may hold spaces
    return int(fields[11]) + int(fields[12])  # utime and stime, fields 14 and 15 of proc(5)


def front_envoy(
    tmp_path: Path, proxies: list[Envoy], ratelimitd_port: int, *, client_cap: int | None
) -> Envoy:
    """envoy/envoy.yaml on loopback with one worker thread, calling ratelimitd, its ratelimitd
    cluster capped at `client_cap` calls per connection (None: no cap of its own, as most
    Envoys calling a rate limit service, so only the server's SETTINGS limit it)."""
    doc = local_bootstrap(
        ingress_port=free_port(),
        admin_port=free_port(),
        ratelimitd=(HOST, ratelimitd_port),
        upstream_port=free_port(),
    )
    (cluster,) = [c for c in doc["static_resources"]["clusters"] if c["name"] == "ratelimitd"]
    options = cluster["typed_extension_protocol_options"]
    http = options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    http["explicit_http_config"]["http2_protocol_options"] = (
        {} if client_cap is None else {"max_concurrent_streams": client_cap}
    )
    return run_envoy(tmp_path, doc, proxies, concurrency=1)


def drive(proxy: Envoy, requests: int, in_flight: int) -> Counter[int]:
    """Send `requests` GETs through `proxy` from `in_flight` connections at once (all start
    together); the count of each status."""
    left = iter(range(requests))
    lock = threading.Lock()
    statuses: Counter[int] = Counter()
    start = threading.Barrier(in_flight)
    failures: list[BaseException] = []

    def client() -> None:
        connection = http.client.HTTPConnection(HOST, proxy.port, timeout=30)
        try:
            connection.connect()
            start.wait()
            while True:
                with lock:
                    if next(left, None) is None:
                        return
                connection.request("GET", "/")
                response = connection.getresponse()
                response.read()
                with lock:
                    statuses[response.status] += 1
        except BaseException as exc:  # reported by the test, not lost in a thread
            failures.append(exc)
            start.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(in_flight)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    return statuses


@pytest.mark.parametrize("transport", ["asgi", "grpc"])
def test_an_envoy_with_one_thread_keeps_every_worker_busy(
    ratelimitd: RatelimitdFactory,
    redis_url: str,
    write_config: Callable[..., Path],
    tmp_path: Path,
    proxies: list[Envoy],
    transport: str,
) -> None:
    # The documented setting, at its extreme: a cluster capped at 1 call per connection makes
    # the Envoy open a connection per call in flight (64 here). Each lands on one of the
    # listening sockets of
    # the SO_REUSEPORT group by a hash of its addresses and ports, so on either worker with
    # probability 1/2 (asgi: each pyvoy Envoy has one socket per worker thread, as many as
    # cores; grpc: one per process). Every connection carries about as many calls (all are
    # busy at 64 in flight), so CPU follows connections. With n >= 32 connections (asserted),
    # all land on one worker with probability 2 * 2^-32 (5e-10), and a worker gets few
    # enough (2 of 32) to fall under the 10% bound with probability 2 * 529 / 2^32 (2.5e-7).
    server = ratelimitd(write_config(CONFIG), redis_url=redis_url, transport=transport, workers=2)
    pids = worker_pids(server, 2)
    proxy = front_envoy(tmp_path, proxies, server.grpc_port, client_cap=1)
    before = {pid: cpu_ticks(pid) for pid in pids}
    statuses = drive(proxy, REQUESTS, IN_FLIGHT)
    used = {pid: cpu_ticks(pid) - before[pid] for pid in pids}
    connections = proxy.stat("cluster.ratelimitd.upstream_cx_total")
    assert statuses == {200: REQUESTS}
    assert connections >= 32, f"the Envoy opened only {connections} connections"
    # An idle worker uses about 1% of a busy one (timers, metrics); each did at least 10%.
    assert min(used.values()) >= 0.1 * max(used.values()), (
        f"CPU ticks per worker: {used}; {connections} connections"
    )


@pytest.mark.parametrize("transport", ["asgi", "grpc"])
def test_an_envoy_capped_like_ratelimitd_has_no_call_refused(
    ratelimitd: RatelimitdFactory,
    redis_url: str,
    write_config: Callable[..., Path],
    tmp_path: Path,
    proxies: list[Envoy],
    transport: str,
) -> None:
    # Envoy learns a server's cap from its SETTINGS, which arrive after the first calls on a
    # new connection have been sent: calls beyond the cap on it are refused (REFUSED_STREAM,
    # then answered by failure_mode_deny; 4 to 53 of these 2000 in our runs without the
    # client's cap). With the same cap on the cluster (envoy/envoy.yaml's 16), none is,
    # even when all 64 calls start at once on no connection.
    server = ratelimitd(
        write_config(CONFIG),
        "--max-streams-per-connection",
        "16",
        redis_url=redis_url,
        transport=transport,
        workers=2,
    )
    proxy = front_envoy(tmp_path, proxies, server.grpc_port, client_cap=16)
    assert drive(proxy, REQUESTS, IN_FLIGHT) == {200: REQUESTS}
    assert proxy.stat("cluster.ratelimitd.upstream_rq_total") == REQUESTS
    assert proxy.stat("cluster.ratelimitd.http2.rx_reset") == 0
