"""Shared fixtures: real redis-server processes and real `ratelimitd serve` processes.

The test process talks to ratelimitd over the wire with Envoy's own generated code
(xds-protos). It must never import ratelimitd.protos or ratelimitd.transports: both define the
same protobuf symbols and cannot share one descriptor pool.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest
import redis
import redis.cluster

from ratelimitd.app.reference_env import VARIABLES as REFERENCE_VARIABLES
from ratelimitd.storage.clock import FakeClock
from ratelimitd.storage.cluster import ClusterStore
from ratelimitd.storage.memory import MemoryStore
from ratelimitd.storage.redis import RedisStore
from tests.stores import Driver

if TYPE_CHECKING:  # envoy_process imports this module
    from tests.envoy_process import Envoy

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 60.0


# Ports handed to servers come from below Linux's ephemeral range (32768-60999): a port the
# kernel picked for us (bind to port 0) can be taken as the source port of some outgoing
# connection before the server under test binds it, which failed CI once. They are handed out
# in turn from a random start, never the same one twice in a run (random picks collided).
_PORTS = range(20000, 32768)
_next_port = itertools.count(random.randrange(len(_PORTS)))


def free_port() -> int:
    """A TCP port nothing listens on right now, outside the kernel's ephemeral range, not
    handed out before in this run."""
    while True:
        port = _PORTS[next(_next_port) % len(_PORTS)]
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@dataclass
class RedisServer:
    """A redis-server process of our own on a free port."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)


def start_redis(
    tmp: Path,
    *,
    port: int | None = None,
    options: Mapping[str, str] | None = None,
    sentinel_config: Path | None = None,
) -> RedisServer:
    """Start redis-server (with `options` on top of ours), or a sentinel reading and rewriting
    `sentinel_config`, and wait until it answers PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not on PATH; install it (Debian/Ubuntu: apt-get install redis-server)"
        )
    port = port or free_port()
    log = tmp / f"redis-{port}.log"
    flags = {"port": str(port), "bind": "127.0.0.1", "save": "", "appendonly": "no"}
    flags |= {"dir": str(tmp), "logfile": str(log), **(options or {})}
    mode = [str(sentinel_config), "--sentinel"] if sentinel_config else []
    process = subprocess.Popen(
        [binary, *mode, *(arg for name, value in flags.items() for arg in (f"--{name}", value))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = RedisServer(port, process)

    def answers() -> bool:
        try:
            return bool(server.client().ping())
        except redis.RedisError:
            return False

    wait_until(answers, STARTUP_TIMEOUT_S, f"redis-server on port {port}")
    return server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; tests get it flushed through `redis_url`."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.process.terminate()
    server.process.wait(timeout=10)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    redis_server.client().flushall()
    return redis_server.url


@dataclass
class ClusterKeys:
    """What the behaviour suites ask of a Redis client (DBSIZE, KEYS, PTTL), answered for the
    whole cluster as a single server would answer them."""

    cluster: redis.cluster.RedisCluster

    def dbsize(self) -> int:
        return int(self.cluster.dbsize(target_nodes=redis.cluster.RedisCluster.PRIMARIES))

    def keys(self, pattern: str = "*") -> list[bytes | str]:
        primaries = redis.cluster.RedisCluster.PRIMARIES
        return list(self.cluster.keys(pattern, target_nodes=primaries))

    def pttl(self, key: bytes | str) -> int:
        return int(self.cluster.pttl(key))


@dataclass
class RedisClusterServers:
    """A Redis Cluster of our own: three masters, no replicas."""

    servers: list[RedisServer]

    @property
    def nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", server.port) for server in self.servers]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{host}:{port}" for host, port in self.nodes)

    @functools.cached_property
    def client(self) -> redis.cluster.RedisCluster:
        """A cluster client for the session (creating one costs tens of milliseconds)."""
        return redis.cluster.RedisCluster(host="127.0.0.1", port=self.servers[0].port)

    def flushall(self) -> None:
        for server in self.servers:
            server.client().flushall()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A 3-master Redis Cluster for the session; tests flush it themselves."""
    tmp = tmp_path_factory.mktemp("redis-cluster")
    servers: list[RedisServer] = []
    try:
        for _ in range(3):
            port = free_port()
            options = {
                "cluster-enabled": "yes",
                "cluster-config-file": str(tmp / f"nodes-{port}.conf"),
                # The bus port defaults to port + 10000, which may be taken or above 65535.
                "cluster-port": str(free_port()),
            }
            servers.append(start_redis(tmp, port=port, options=options))
        subprocess.run(
            ["redis-cli", "--cluster", "create"]
            + [f"127.0.0.1:{server.port}" for server in servers]
            + ["--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=STARTUP_TIMEOUT_S,
        )

        def ready() -> bool:
            return all(s.client().cluster("info")["cluster_state"] == "ok" for s in servers)

        wait_until(ready, STARTUP_TIMEOUT_S, "cluster_state:ok on every node")
        cluster = RedisClusterServers(servers)
        yield cluster
        cluster.client.close()
    finally:
        for server in servers:
            server.process.terminate()
            server.process.wait(timeout=10)


@pytest.fixture(params=["memory", "redis", "redis-unbatched", "redis-cluster"])
def driver(
    request: pytest.FixtureRequest,
    loop: asyncio.AbstractEventLoop,
    redis_server: RedisServer,
) -> Iterator[Driver]:
    """Every store in turn, each with its own FakeClock (Redis through the test-only time
    argument of the scripts); Redis with and without batching, and a Redis Cluster."""
    clock = FakeClock()
    if request.param == "memory":
        yield Driver(MemoryStore(clock), clock, loop.run_until_complete, None)
        return
    if request.param == "redis-cluster":
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        cluster.flushall()
        cluster_store = ClusterStore(cluster.nodes, timeout=5, clock=clock)
        keys = ClusterKeys(cluster.client)
        # Driver is typed for the single-server store and client; the suites use only what
        # ClusterStore and ClusterKeys offer.
        yield Driver(
            cast(RedisStore, cluster_store),
            clock,
            loop.run_until_complete,
            cast(redis.Redis, keys),
        )
        loop.run_until_complete(cluster_store.close())
        return
    client = redis_server.client()
    client.flushall()
    store = RedisStore(redis_server.url, timeout=5, clock=clock, batch=request.param == "redis")
    yield Driver(store, clock, loop.run_until_complete, client)
    loop.run_until_complete(store.close())


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop for driving async code from plain tests."""
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


@pytest.fixture
def run(loop: asyncio.AbstractEventLoop) -> Callable[[Coroutine[Any, Any, T]], T]:
    """Run a coroutine to completion on the test's loop."""
    return loop.run_until_complete


def clean_environment() -> dict[str, str]:
    """Our environment without the variables ratelimitd reads: RATELIMITD_* and the
    reference's (a developer's REDIS_URL or PORT must not reach the servers under test)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RATELIMITD_") and k not in REFERENCE_VARIABLES
    }


def log_records(text: str) -> list[dict[str, Any]]:
    """The JSON log lines in `text` (a server's output), in order."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `ratelimitd serve` to completion, for cases where it must refuse to start."""
    command = [sys.executable, "-m", "ratelimitd", "serve", *args]
    env = clean_environment()
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=30)


@dataclass
class Ratelimitd:
    """A running `ratelimitd serve` process."""

    grpc_port: int
    http_port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def http(self, path: str) -> tuple[int, str]:
        """GET path from the HTTP port: (status, body)."""
        url = f"http://127.0.0.1:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def logs(self) -> str:
        return self.log.read_text()

    def answers(self) -> bool:
        """Whether /healthcheck answers 200 (from any worker); fails the test if the
        process has exited."""
        if self.process.poll() is not None:
            pytest.fail(f"ratelimitd exited with {self.process.returncode}:\n{self.logs()}")
        try:
            return self.http("/healthcheck")[0] == 200
        except OSError:
            return False

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines of event `name` (from any of its processes), in order."""
        return [record for record in log_records(self.logs()) if record.get("event") == name]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=15)


@dataclass
class RatelimitdFactory:
    """Starts ratelimitd processes and stops them all at teardown."""

    tmp: Path
    started: list[Ratelimitd] = field(default_factory=list)

    def __call__(
        self,
        config: str | Path | Sequence[str | Path],
        *args: str,
        redis_url: str | None = None,
        wait: bool = True,
        transport: str = "grpc",
        workers: int = 1,
    ) -> Ratelimitd:
        paths = [config] if isinstance(config, str | Path) else list(config)
        grpc_port, http_port = free_port(), free_port()
        flags: list[str] = []
        for path in paths:
            flags += ["--config", str(path)]
        flags += [
            "--grpc-addr",
            f"127.0.0.1:{grpc_port}",
            "--http-addr",
            f"127.0.0.1:{http_port}",
        ]
        flags += ["--transport", transport, "--workers", str(workers)]
        if redis_url:
            flags += ["--redis-url", redis_url]
        return self.launch([*flags, *args], grpc_port=grpc_port, http_port=http_port, wait=wait)

    def launch(
        self,
        args: Sequence[str],
        *,
        grpc_port: int,
        http_port: int,
        env: Mapping[str, str] | None = None,
        wait: bool = True,
    ) -> Ratelimitd:
        """Start `ratelimitd serve ARGS`, reachable on 127.0.0.1 at these ports (set by ARGS
        or `env`), in the clean_environment() plus `env`."""
        command = [sys.executable, "-m", "ratelimitd", "serve", *args]
        log = self.tmp / f"ratelimitd-{grpc_port}.log"
        environ = clean_environment() | dict(env or {})
        with log.open("wb") as sink:
            process = subprocess.Popen(command, stdout=sink, stderr=sink, env=environ, cwd=REPO)
        server = Ratelimitd(grpc_port, http_port, process, log)
        self.started.append(server)
        if wait:
            # Every worker serves (for asgi: Envoy listens on the gRPC port, which it binds
            # after the app's HTTP port answers), and the store answers.
            wait_until(
                lambda: server.answers() and bool(server.events("serving")),
                STARTUP_TIMEOUT_S,
                "ratelimitd to log `serving` and answer /healthcheck",
            )
        return server


@pytest.fixture
def ratelimitd(tmp_path: Path) -> Iterator[RatelimitdFactory]:
    """Factory fixture: `ratelimitd(config_path, *flags, redis_url=...)` starts a server."""
    factory = RatelimitdFactory(tmp_path)
    yield factory
    for server in factory.started:
        server.stop()


@pytest.fixture(scope="module")
def module_ratelimitd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RatelimitdFactory]:
    """Like `ratelimitd`, for servers shared by a module's tests (which must then use keys of
    their own)."""
    factory = RatelimitdFactory(tmp_path_factory.mktemp("ratelimitd"))
    yield factory
    for server in factory.started:
        server.stop()


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write YAML text to a file in the test's directory and return its path."""

    def write(text: str, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def proxies() -> Iterator[list[Envoy]]:
    """The Envoys a test started (tests.envoy_process.run_envoy), stopped at its end."""
    started: list[Envoy] = []
    yield started
    for envoy in started:
        envoy.process.terminate()
        envoy.process.wait(timeout=15)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to stop, pause or kill; gone at teardown."""
    server = start_redis(tmp_path)
    yield server
    if server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)  # in case the test paused it
        server.process.kill()
        server.process.wait(timeout=10)
