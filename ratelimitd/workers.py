"""Worker processes sharing the listening ports (SO_REUSEPORT): started, restarted when they
die, told to reload their config on SIGHUP, and stopped together on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import structlog
from pyvoy import PyvoyServer

from ratelimitd import reference_env
from ratelimitd.metrics import MULTIPROC_ENV
from ratelimitd.settings import (
    DRAIN_MARKER_ENV,
    ENV_PREFIX,
    RELOAD_MARKER_ENV,
    Settings,
    split_address,
)

log = structlog.get_logger(__name__)

ASGI_APP = "ratelimitd.transports.asgi:app"
_MAX_BACKOFF_S = 30.0


class Worker(Protocol):
    """A running worker process."""

    async def wait(self) -> int | None:
        """Wait until it exits; its exit status."""
        ...

    async def stop(self) -> None:
        """Ask it to exit and wait until it has."""
        ...

    def reload(self) -> None:
        """Ask it to reload its config."""
        ...


class _Subprocess:
    """A `ratelimitd serve` child process running the grpc transport."""

    def __init__(self, process: asyncio.subprocess.Process, grace: float) -> None:
        self._process = process
        self._grace = grace

    async def wait(self) -> int | None:
        return await self._process.wait()

    def reload(self) -> None:
        if self._process.returncode is None:
            self._process.send_signal(signal.SIGHUP)

    async def stop(self) -> None:
        if self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), self._grace)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()


def worker_environment(settings: Settings, scratch: Path) -> dict[str, str]:
    """The environment of a worker: ours, with the settings as RATELIMITD_* variables, and
    the metrics directory all workers share (in `scratch`, which the supervisor removes)."""
    # The settings carry everything: neither our variables nor the reference's are inherited.
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(ENV_PREFIX) and k not in reference_env.VARIABLES
    }
    metrics_dir = scratch / "metrics"
    metrics_dir.mkdir(exist_ok=True)
    return (
        inherited
        | settings.to_environment()
        | {f"{ENV_PREFIX}WORKERS": "1", MULTIPROC_ENV: str(metrics_dir)}
    )


def grpc_starter(settings: Settings, scratch: Path) -> Callable[[], Awaitable[Worker]]:
    """Starts one `ratelimitd serve` process with the grpc transport."""
    environment = worker_environment(settings, scratch)

    async def start() -> Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ratelimitd", "serve", env=environment
        )
        return _Subprocess(process, settings.drain_timeout + 5)

    return start


def asgi_starter(settings: Settings, scratch: Path) -> Callable[[], Awaitable[Worker]]:
    """Starts one Envoy process hosting the ASGI app (pyvoy). Creating the drain marker in
    `scratch` tells every worker's app to stop serving; each worker also gets a reload marker
    of its own there."""
    host, port = split_address(settings.grpc_addr)
    drain_marker = scratch / "draining"
    environment = worker_environment(settings, scratch) | {DRAIN_MARKER_ENV: str(drain_marker)}
    reload_markers = (scratch / f"reload-{n}" for n in itertools.count())

    tls = settings.tls()

    async def start() -> Worker:
        reload_marker = next(reload_markers)
        server = PyvoyServer(
            ASGI_APP,
            address=host,
            port=port,
            # With a key and certificate and no separate TLS port, pyvoy serves TLS on `port`.
            tls_key=tls.key if tls else None,
            tls_cert=tls.cert if tls else None,
            tls_ca_cert=tls.client_ca if tls else None,
            tls_require_client_certificate=True,
            tls_enable_http3=False,
            lifespan=True,
            log_level="error",
            env=environment | {RELOAD_MARKER_ENV: str(reload_marker)},
            stdout=None,
            stderr=None,
        )
        await server.start()
        return _EnvoyWorker(server, settings.drain_timeout, drain_marker, reload_marker)

    return start


class _EnvoyWorker:
    """A pyvoy Envoy process; stopping it drains in-flight requests first."""

    def __init__(
        self, server: PyvoyServer, grace: float, drain_marker: Path, reload_marker: Path
    ) -> None:
        self._server = server
        self._grace = grace
        self._drain_marker = drain_marker
        self._reload_marker = reload_marker
        self._reloads = 0

    async def wait(self) -> int | None:
        return await self._server.wait()

    def reload(self) -> None:
        # Envoy keeps SIGHUP to itself ("caught and eating SIGHUP"), and the app's event loop
        # is not on the main thread, so it cannot take signals: it watches this file instead.
        self._reloads += 1
        staged = self._reload_marker.with_suffix(".new")
        staged.write_text(str(self._reloads))
        staged.replace(self._reload_marker)  # new contents at once: one change, one reload

    async def stop(self) -> None:
        # Envoy exits at once on SIGTERM, cutting requests in flight: stop its listeners
        # through its admin API first and wait until it has answered what it accepted.
        self._drain_marker.touch()  # the app turns not-ready at once
        admin = self._server._admin_address  # pyvoy keeps it private; no public accessor
        if admin is not None:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(_drain, admin, self._grace)
        await self._server.stop()


# pyvoy's HTTP connection manager (stat_prefix ingress_http) serves the app; Envoy's admin
# listener has one of its own (http.admin.*), which counts the /stats request asking.
_ACTIVE_REQUESTS = "http.ingress_http.downstream_rq_active"
_ACTIVE_FILTER = quote(f"^{re.escape(_ACTIVE_REQUESTS)}$")


def _drain(admin: str, grace: float) -> None:
    """Close the listeners of the Envoy at `admin`, then wait (at most `grace` seconds) until
    it has no request in flight."""
    urllib.request.urlopen(
        urllib.request.Request(f"http://{admin}/drain_listeners", method="POST"), timeout=1
    ).close()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        with urllib.request.urlopen(
            f"http://{admin}/stats?filter={_ACTIVE_FILTER}", timeout=1
        ) as response:
            lines = response.read().decode().splitlines()
        # No such line (a pyvoy that names its stats otherwise): wait the whole grace.
        if lines and all(line.rpartition(":")[2].strip() == "0" for line in lines):
            return
        time.sleep(0.05)


def _reload(workers: Sequence[Worker]) -> None:
    log.info("reload_requested", workers=len(workers))
    for worker in workers:
        worker.reload()


async def supervise(start: Callable[[], Awaitable[Worker]], count: int) -> int:
    """Run `count` workers until SIGTERM/SIGINT, restarting any that die meanwhile and
    passing SIGHUP on to them all (reload the config)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    workers: list[Worker] = []
    loop.add_signal_handler(signal.SIGHUP, _reload, workers)
    try:
        workers += [await start() for _ in range(count)]
    except Exception as exc:
        log.error("worker_start_failed", error=str(exc))
        await asyncio.gather(*(w.stop() for w in workers))
        return 1
    log.info("workers_started", count=count, pid=os.getpid())

    async def keep(slot: int) -> None:
        backoff = 1.0
        while True:
            code = await workers[slot].wait()
            if stop.is_set():
                return
            log.error("worker_exited", slot=slot, code=code, restart_in_s=backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)
            with contextlib.suppress(Exception):
                workers[slot] = await start()

    keepers = [asyncio.ensure_future(keep(slot)) for slot in range(count)]
    await stop.wait()
    log.info("workers_stopping", count=count)
    await asyncio.gather(*(w.stop() for w in workers))
    for keeper in keepers:
        keeper.cancel()
    log.info("stopped")
    return 0
