"""Worker processes: several share the ports, die and come back, and stop together."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from tests.conftest import Ratelimitd, RatelimitdFactory, run_serve, wait_until

LIMIT = 40
CONFIG = f"""
domain: w
descriptors:
  - key: tenant
    rate_limit: {{unit: day, requests_per_unit: {LIMIT}}}
"""
REQUEST = rls_pb2.RateLimitRequest(
    domain="w",
    descriptors=[
        ratelimit_pb2.RateLimitDescriptor(
            entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key="tenant", value="t")]
        )
    ],
)


def descendants(pid: int) -> set[int]:
    """Every process below `pid`."""
    found: set[int] = set()
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    for child in map(int, children.split()):
        found |= {child} | descendants(child)
    return found


def ratelimitd_pids(server: Ratelimitd) -> set[int]:
    """The worker processes serving: `ratelimitd serve` children, or the Envoys of pyvoy."""
    workers = set()
    for pid in descendants(server.process.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue  # a short-lived helper process that has exited
        if b"envoy" in command or b"ratelimitd" in command:
            workers.add(pid)
    return workers


@pytest.mark.parametrize("transport", ["grpc", "asgi"])
def test_two_workers_share_the_port_and_the_limit(
    ratelimitd: RatelimitdFactory,
    redis_url: str,
    write_config: Callable[..., Path],
    transport: str,
) -> None:
    server = ratelimitd(write_config(CONFIG), redis_url=redis_url, transport=transport, workers=2)
    workers = ratelimitd_pids(server)
    assert len(workers) == 2
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        futures = [stub.ShouldRateLimit.future(REQUEST, timeout=30) for _ in range(100)]
        codes = [f.result().overall_code for f in futures]
    assert codes.count(rls_pb2.RateLimitResponse.OK) == LIMIT
    assert server.stop() == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_a_killed_worker_is_replaced(
    ratelimitd: RatelimitdFactory, redis_url: str, write_config: Callable[..., Path]
) -> None:
    server = ratelimitd(write_config(CONFIG), redis_url=redis_url, workers=2)
    before = ratelimitd_pids(server)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(ratelimitd_pids(server) - {victim}) == 2, 20, "a new worker")
    assert server.http("/healthcheck") == (200, "OK\n")


def test_several_workers_need_a_shared_store(write_config: Callable[..., Path]) -> None:
    result = run_serve("--config", str(write_config(CONFIG)), "--workers", "2")
    assert result.returncode == 1
    assert "workers_need_redis" in result.stderr


def test_asgi_workers_start_with_a_pythonpath_set(
    ratelimitd: RatelimitdFactory,
    redis_url: str,
    write_config: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # pyvoy gives the Python embedded in each worker's Envoy its own PYTHONPATH (with the
    # standard library); one passed on from our environment used to replace it, and every
    # worker died at start ("No module named 'encodings'").
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    server = ratelimitd(write_config(CONFIG), redis_url=redis_url, transport="asgi")
    assert server.http("/healthcheck") == (200, "OK\n")
