"""The servers under test: redis-server, ratelimitd, the constant-answer servers, or another
RLS server given by address; and a gRPC probe that checks what they answer."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import redis
from envoy.service.auth.v3 import external_auth_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from redis.crc import key_slot

from bench.procs import (
    HarnessError,
    Proc,
    Supervisor,
    UnavailableError,
    children,
    cpu_seconds,
    free_port,
    http_ok,
    own_cpu_seconds,
    resident_kib,
    run_captured,
    wait_until,
)
from bench.scenarios import CHECK_METHOD, RLS_METHOD, one

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STARTUP_TIMEOUT_S = 30.0
HOST = "127.0.0.1"
CHECK_OK, CHECK_OVER_LIMIT = 0, 8  # CheckResponse status.code: OK, RESOURCE_EXHAUSTED


@dataclass
class RedisServer:
    """Our own redis-server on a free loopback port."""

    port: int
    proc: Proc
    client: redis.Redis

    @property
    def url(self) -> str:
        """redis:// URL of database 0."""
        return f"redis://{HOST}:{self.port}/0"

    def flushall(self) -> None:
        """Empty it."""
        self.client.flushall()

    def counters(self) -> RedisCounters:
        """What it has done so far."""
        return redis_counters(self.client, self.proc.pid)


def start_redis(supervisor: Supervisor, options: Sequence[str] = ()) -> RedisServer:
    """Start redis-server without persistence (and with `options`, redis-server's own) and
    wait until it answers PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise HarnessError("redis-server is not on PATH")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(supervisor.workdir), *options]
    proc = supervisor.start(f"redis-{port}", argv)
    client = redis.Redis(host=HOST, port=port, socket_timeout=5)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    wait_until(answers, timeout=STARTUP_TIMEOUT_S, what=f"redis-server :{port}", proc=proc)
    return RedisServer(port, proc, client)


@dataclass
class RedisCluster:
    """A Redis Cluster of our own: masters only, each a RedisServer, slots spread evenly."""

    servers: list[RedisServer]

    @property
    def url(self) -> str:
        """redis+cluster:// URL naming every node."""
        return "redis+cluster://" + ",".join(f"{HOST}:{s.port}" for s in self.servers)

    def flushall(self) -> None:
        """Empty every node."""
        for server in self.servers:
            server.flushall()

    def node_of(self, hash_tag: str) -> int:
        """Which of `servers` (its index) serves the slot of keys tagged `{hash_tag}`."""
        slot = key_slot(hash_tag.encode())
        for first, last, master, *_ in self.servers[0].client.cluster("slots"):
            if int(first) <= slot <= int(last):
                return next(i for i, s in enumerate(self.servers) if s.port == int(master[1]))
        raise HarnessError(f"no node serves slot {slot} ({hash_tag})")


def start_redis_cluster(supervisor: Supervisor, nodes: int = 3) -> RedisCluster:
    """Start `nodes` redis-servers in cluster mode, join them with `redis-cli --cluster
    create` (masters only) and wait until every node says cluster_state:ok."""
    cli = shutil.which("redis-cli")
    if cli is None:
        raise UnavailableError("redis-cli is not on PATH (Debian: apt-get install redis-tools)")
    servers = []
    for _ in range(nodes):
        port = free_port()
        options = ["--cluster-enabled", "yes"]
        options += ["--cluster-config-file", str(supervisor.workdir / f"nodes-{port}.conf")]
        # The bus port defaults to port + 10000, which may be taken or above 65535.
        options += ["--cluster-port", str(free_port())]
        servers.append(start_redis(supervisor, options))
    argv = [cli, "--cluster", "create", *(f"{HOST}:{s.port}" for s in servers)]
    created = run_captured([*argv, "--cluster-replicas", "0", "--cluster-yes"], timeout=60)
    if "[OK] All 16384 slots covered" not in created:
        raise HarnessError(f"redis-cli --cluster create failed:\n{created[-2000:]}")

    def ready() -> bool:
        try:
            return all(s.client.cluster("info")["cluster_state"] == "ok" for s in servers)
        except redis.RedisError:
            return False

    wait_until(ready, timeout=STARTUP_TIMEOUT_S, what="cluster_state:ok on every node")
    return RedisCluster(servers)


Store = RedisServer | RedisCluster


@dataclass
class RedisCounters:
    """What one Redis has done so far, for before/after differences."""

    script_calls: int  # EVALSHA + EVAL calls: one each per ratelimitd batch (per slot)
    commands: int  # every command (INFO calls of the harness included)
    cpu_s: float | None  # redis-server's CPU time, when it is our process


def redis_counters(client: redis.Redis, pid: int | None) -> RedisCounters:
    """Read INFO commandstats (and /proc for our own redis-server's CPU)."""
    stats = client.info("commandstats")
    calls = {name: int(value["calls"]) for name, value in stats.items()}
    script = sum(calls.get(f"cmdstat_{name}", 0) for name in ("evalsha", "eval", "evalsha_ro"))
    return RedisCounters(script, sum(calls.values()), cpu_seconds(pid) if pid else None)


def ratelimitd_binary() -> Path:
    """The ratelimitd console script of this virtualenv."""
    candidate = BIN / "ratelimitd"
    if candidate.exists():
        return candidate
    found = shutil.which("ratelimitd")
    if found is None:
        raise HarnessError("ratelimitd is not installed in this virtualenv (pip install -e .)")
    return Path(found)


def serve_flags() -> set[str]:
    """Which of the optional `ratelimitd serve` flags this version has."""
    text = run_captured([str(ratelimitd_binary()), "serve", "--help"])
    return {flag for flag in ("--transport", "--workers") if flag in text}


@dataclass(frozen=True)
class ProcessCpu:
    """CPU seconds so far of a server's worker processes, by pid, each with its descendants
    (a pyvoy worker's Envoy), and of the supervisor above them, its own process only (None
    when the server has none)."""

    workers: dict[int, float]
    supervisor_s: float | None = None


@dataclass
class Server:
    """A gRPC RateLimitService endpoint under test, with the processes to account CPU to."""

    label: str  # ratelimitd, constant, target
    transport: str
    workers: int
    host: str
    port: int
    procs: list[Proc] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)  # --target-pid: someone else's process
    metrics_url: str | None = None  # ratelimitd's GET /metrics (bench/metrics.py)

    def cpu_s(self) -> float | None:
        """CPU seconds of every process tree of this server so far (None: unknown)."""
        pids = [p.pid for p in self.procs] + self.pids
        if not pids:
            return None
        return sum(cpu_seconds(pid) for pid in pids)

    def process_cpu(self) -> ProcessCpu | None:
        """CPU seconds so far of each worker process (None: no process known). A ratelimitd
        with workers is a supervisor whose children are the workers (grpc: `ratelimitd serve`
        processes; asgi: one Envoy each, even with 1 worker); without (grpc, 1 worker) it is
        its only worker. A constant server's processes are its workers (asgi: pyvoy with its
        Envoy), and so is each --target-pid of a target."""
        roots = [p.pid for p in self.procs] + self.pids
        if not roots:
            return None
        if self.label == "ratelimitd" and len(roots) == 1:
            workers = children(roots[0])
            if workers:
                return ProcessCpu(
                    {pid: cpu_seconds(pid) for pid in workers}, own_cpu_seconds(roots[0])
                )
        return ProcessCpu({pid: cpu_seconds(pid) for pid in roots})

    def resident_kib(self) -> dict[int, tuple[str, int]]:
        """Name and VmRSS (KiB) of every process of this server's trees, by pid."""
        found: dict[int, tuple[str, int]] = {}
        for pid in [p.pid for p in self.procs] + self.pids:
            found |= resident_kib(pid)
        return found

    def check_alive(self) -> None:
        """HarnessError if one of our processes has exited."""
        for proc in self.procs:
            if not proc.alive():
                raise HarnessError(
                    f"{proc.name} exited ({proc.popen.returncode}); log {proc.log}:\n"
                    f"{proc.log_tail()}"
                )


def start_ratelimitd(
    supervisor: Supervisor,
    *,
    transport: str,
    workers: int,
    flags: set[str],
    redis_url: str | None,
    config: Path | Sequence[Path],
    extra_args: Sequence[str] = (),
) -> Server:
    """`ratelimitd serve` on free ports (a --config per path of `config`); ready once GET
    /healthcheck answers 200."""
    grpc_port, http_port = free_port(), free_port()
    argv = [str(ratelimitd_binary()), "serve"]
    for path in [config] if isinstance(config, Path) else config:
        argv += ["--config", str(path)]
    if redis_url is not None:  # None: the in-memory store
        argv += ["--redis-url", redis_url]
    argv += ["--grpc-addr", f"{HOST}:{grpc_port}", "--http-addr", f"{HOST}:{http_port}"]
    if "--transport" in flags:
        argv += ["--transport", transport]
    elif transport != "grpc":
        raise UnavailableError("`ratelimitd serve` has no --transport flag yet: only grpc runs")
    if "--workers" in flags:
        argv += ["--workers", str(workers)]
    elif workers != 1:
        raise UnavailableError("`ratelimitd serve` has no --workers flag yet: only 1 worker runs")
    argv += list(extra_args)
    proc = supervisor.start(f"ratelimitd-{transport}-w{workers}-{grpc_port}", argv)
    # Whichever port the transport serves /healthcheck on (an ASGI app may serve it on both).
    urls = [f"http://{HOST}:{port}/healthcheck" for port in (http_port, grpc_port)]
    wait_until(
        lambda: any(http_ok(url) for url in urls),
        timeout=STARTUP_TIMEOUT_S,
        what="ratelimitd GET /healthcheck = 200",
        proc=proc,
    )
    metrics = f"http://{HOST}:{http_port}/metrics"
    return Server("ratelimitd", transport, workers, HOST, grpc_port, [proc], metrics_url=metrics)


def start_constant(supervisor: Supervisor, *, transport: str, workers: int) -> Server:
    """The constant-answer server of `transport` with `workers` processes on one port, as
    ratelimitd runs its workers (grpc: SO_REUSEPORT processes; asgi: one pyvoy Envoy each,
    which binds with reuse_port)."""
    port = free_port()
    env = {"PYTHONPATH": str(REPO)}
    procs: list[Proc] = []
    if transport == "grpc":
        for n in range(workers):
            argv = [sys.executable, "-m", "bench.constant_grpc", "--address", f"{HOST}:{port}"]
            if workers > 1:
                argv.append("--reuse-port")
            procs.append(supervisor.start(f"constant-grpc-{port}-{n}", argv, env=env, cwd=REPO))
    elif transport == "asgi":
        pyvoy = BIN / "pyvoy"
        if not pyvoy.exists():
            raise HarnessError("pyvoy is not installed in this virtualenv")
        argv = [str(pyvoy), "bench.constant_asgi:app", "--address", HOST, "--port", str(port)]
        for n in range(workers):
            procs.append(supervisor.start(f"constant-asgi-{port}-{n}", argv, env=env, cwd=REPO))
    else:
        raise HarnessError(f"unknown transport {transport!r}")
    server = Server("constant", transport, workers, HOST, port, procs)
    wait_until(
        lambda: probe_ready(server),
        timeout=STARTUP_TIMEOUT_S,
        what=f"constant {transport} server answering gRPC",
        proc=procs[0],
    )
    return server


def probe_ready(server: Server) -> bool:
    """True once the server answers one ShouldRateLimit call with gRPC OK."""
    return probe(server, one().messages, timeout=1).answered == 1


@dataclass
class ProbeResult:
    """What a server answered to a sample of a scenario's messages, over a real gRPC client."""

    sent: int
    answered: int  # gRPC status OK
    over_limit: int  # of those, overall_code OVER_LIMIT (Check: status.code 8)
    errors: list[str]

    def summary(self) -> str:
        """`9/10 OVER_LIMIT` and any errors."""
        text = f"{self.over_limit}/{self.answered} OVER_LIMIT"
        if self.errors:
            text += f", {len(self.errors)} gRPC errors ({self.errors[0]})"
        return text

    @classmethod
    def total(cls, results: Sequence[ProbeResult]) -> ProbeResult:
        """Several probes as one."""
        return cls(
            sum(r.sent for r in results),
            sum(r.answered for r in results),
            sum(r.over_limit for r in results),
            [error for r in results for error in r.errors],
        )


def probe(
    server: Server,
    messages: Sequence[bytes],
    *,
    timeout: float = 5,
    method: str = RLS_METHOD,
) -> ProbeResult:
    """Send each message once to `method` with grpcio (decoded with xds-protos) and count the
    answers: RateLimitResponses by overall_code, or, for ext_authz Check, CheckResponses by
    status.code (0 allowed, 8 RESOURCE_EXHAUSTED = over limit, anything else an error)."""
    errors: list[str] = []
    answered = over = 0
    checks = method == CHECK_METHOD

    def decode(raw: bytes) -> Any:
        if checks:
            return external_auth_pb2.CheckResponse.FromString(raw)
        return rls_pb2.RateLimitResponse.FromString(raw)

    with grpc.insecure_channel(f"{server.host}:{server.port}") as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, Any] = channel.unary_unary(
            method,
            request_serializer=None,  # the messages are already serialized
            response_deserializer=decode,
        )
        for message in messages:
            try:
                response = call(message, timeout=timeout)
            except grpc.RpcError as exc:
                if isinstance(exc, grpc.Call):
                    errors.append(f"{exc.code().name}: {exc.details()}")
                else:
                    errors.append(str(exc))
                continue
            if checks:
                code = response.status.code
                if code not in (CHECK_OK, CHECK_OVER_LIMIT):
                    errors.append(f"CheckResponse status.code {code}: {response.status.message}")
                    continue
                answered += 1
                over += code == CHECK_OVER_LIMIT
                continue
            answered += 1
            over += response.overall_code == rls_pb2.RateLimitResponse.OVER_LIMIT
    return ProbeResult(len(messages), answered, over, errors)
