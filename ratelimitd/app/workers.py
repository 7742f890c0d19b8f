"""Worker processes sharing the listening ports (SO_REUSEPORT): started, announced once all
serve, restarted when they die, told to reload their config on SIGHUP, and stopped together on
SIGTERM or SIGINT. The supervisor talks to them through files in its scratch directory (see
markers.py)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import re
import signal
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import structlog
from pyvoy import PyvoyServer

from ratelimitd.app import reference_env
from ratelimitd.app.build import tls_files
from ratelimitd.app.markers import write_marker
from ratelimitd.app.settings import (
    DRAIN_MARKER_ENV,
    ENV_PREFIX,
    READY_MARKER_ENV,
    RELOAD_MARKER_ENV,
    Settings,
    split_address,
)
from ratelimitd.observe.metrics import MULTIPROC_ENV

log = structlog.get_logger(__name__)

ASGI_APP = "ratelimitd.app.asgi_worker:app"
_MAX_BACKOFF_S = 30.0
_READY_POLL_S = 0.05


class Worker(Protocol):
    """A running worker process."""

    async def wait(self) -> int | None:
        """Wait until it exits; its exit status."""
        ...

    async def stop(self) -> None:
        """Ask it to exit and wait until it has."""
        ...


# Starts one worker, which creates the file it is given once it serves.
Starter = Callable[[Path], Awaitable[Worker]]


class _Subprocess:
    """A `ratelimitd serve` child process running the grpc transport."""

    def __init__(self, process: asyncio.subprocess.Process, grace: float) -> None:
        self._process = process
        self._grace = grace

    async def wait(self) -> int | None:
        return await self._process.wait()

    async def stop(self) -> None:
        if self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), self._grace)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()


def reload_marker(scratch: Path) -> Path:
    """The reload marker of the workers of the supervisor whose scratch directory this is."""
    return scratch / "reload"


def worker_environment(settings: Settings, scratch: Path) -> dict[str, str]:
    """The environment of a worker: ours, with the settings as RATELIMITD_* variables, and
    the metrics directory and reload marker all workers share (in `scratch`, which the
    supervisor removes)."""
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
        | dataclasses.replace(settings, workers=1).to_environment()
        | {
            MULTIPROC_ENV: str(metrics_dir),
            RELOAD_MARKER_ENV: str(reload_marker(scratch)),
        }
    )


def grpc_starter(settings: Settings, scratch: Path) -> Starter:
    """Starts one `ratelimitd serve` process with the grpc transport."""
    environment = worker_environment(settings, scratch)

    async def start(ready_marker: Path) -> Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ratelimitd",
            "serve",
            env=environment | {READY_MARKER_ENV: str(ready_marker)},
        )
        return _Subprocess(process, settings.drain_timeout + 5)

    return start


# Variables pyvoy sets for the Python it embeds in Envoy.
_PYVOY_OWN = ("PYTHONPATH", "PYTHONHOME")


def asgi_starter(settings: Settings, scratch: Path) -> Starter:
    """Starts one Envoy process hosting the ASGI app (pyvoy). Creating the drain marker in
    `scratch` tells every worker's app to stop serving."""
    drain_marker = scratch / "draining"
    # pyvoy sets the embedded interpreter's PYTHONPATH (this process's sys.path, which holds a
    # PYTHONPATH of ours) and PYTHONHOME; ours, passed on, would replace them and leave it
    # without its standard library ("No module named 'encodings'").
    environment = {
        name: value
        for name, value in worker_environment(settings, scratch).items()
        if name not in _PYVOY_OWN
    } | {DRAIN_MARKER_ENV: str(drain_marker)}

    async def start(ready_marker: Path) -> Worker:
        server = pyvoy_server(settings, environment | {READY_MARKER_ENV: str(ready_marker)})
        await server.start()
        return _EnvoyWorker(server, settings.drain_timeout, drain_marker)

    return start


def pyvoy_server(settings: Settings, environment: dict[str, str]) -> PyvoyServer:
    """The (not yet started) Envoy process of one asgi worker, run with `environment`."""
    host, port = split_address(settings.grpc_addr)
    tls = tls_files(settings)
    return _CappedPyvoyServer(
        ASGI_APP,
        settings.max_streams_per_connection,
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
        env=environment,
        stdout=None,
        stderr=None,
    )


class _CappedPyvoyServer(PyvoyServer):
    """pyvoy's server, announcing at most `max_streams` concurrent streams per HTTP/2
    connection (None: Envoy's default, 1024). pyvoy has no parameter for the HTTP connection
    manager's HTTP/2 options, so they go into the Envoy config it generates."""

    def __init__(self, app: str, max_streams: int | None, **options: Any) -> None:
        super().__init__(app, **options)
        self._max_streams = max_streams

    def get_envoy_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_envoy_config()
        if self._max_streams is not None:
            cap_concurrent_streams(config, self._max_streams)
        return config


_HTTP_CONNECTION_MANAGER = "envoy.filters.network.http_connection_manager"


def cap_concurrent_streams(config: dict[str, Any], max_streams: int) -> None:
    """Set http2_protocol_options.max_concurrent_streams on every HTTP connection manager of
    the TCP listeners of Envoy bootstrap `config` (in place); RuntimeError when there is none
    (pyvoy generates its config otherwise: the cap must not silently go missing)."""
    managers: list[dict[str, Any]] = []
    try:
        for listener in config["static_resources"]["listeners"]:
            if listener["address"]["socket_address"].get("protocol", "TCP") != "TCP":
                continue  # QUIC: HTTP/3 has no HTTP/2 options
            for chain in listener["filter_chains"]:
                managers += [
                    f["typed_config"]
                    for f in chain["filters"]
                    if f["name"] == _HTTP_CONNECTION_MANAGER
                ]
    except (KeyError, TypeError) as exc:
        raise RuntimeError(f"unexpected shape of pyvoy's Envoy config: {exc!r}") from exc
    if not managers:
        raise RuntimeError(
            f"pyvoy's Envoy config has no {_HTTP_CONNECTION_MANAGER} on a TCP listener"
        )
    for manager in managers:
        options = manager.setdefault("http2_protocol_options", {})
        options["max_concurrent_streams"] = max_streams


class _EnvoyWorker:
    """A pyvoy Envoy process; stopping it drains in-flight requests first."""

    def __init__(self, server: PyvoyServer, grace: float, drain_marker: Path) -> None:
        self._server = server
        self._grace = grace
        self._drain_marker = drain_marker

    async def wait(self) -> int | None:
        return await self._server.wait()

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


def _reload(marker: Path, generations: Iterator[int]) -> None:
    generation = next(generations)
    log.info("reload_requested", generation=generation)
    # Every worker, alive now or started later, compares this with what it read before
    # loading its config (see markers.py): no worker can miss it.
    write_marker(marker, str(generation))


async def _until_ready(workers: list[tuple[Worker, Path]], stop: asyncio.Event) -> None:
    """Return once every worker has created its ready marker, or stop is set; RuntimeError
    when one exits first."""
    exits = [asyncio.ensure_future(worker.wait()) for worker, _ in workers]
    try:
        while not stop.is_set() and not all(marker.exists() for _, marker in workers):
            for exited in exits:
                if exited.done():
                    status = exited.result()
                    raise RuntimeError(f"a worker exited with status {status} before it served")
            await asyncio.sleep(_READY_POLL_S)
    finally:
        for exited in exits:
            exited.cancel()


async def supervise(
    start: Starter, count: int, scratch: Path, serving: Mapping[str, object]
) -> int:
    """Run `count` workers until SIGTERM/SIGINT: log `serving` with these fields once all
    serve, restart any that dies later, and pass SIGHUP on to every one (reload the config).
    The exit status: 1 when a worker failed to start, otherwise 0."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload, reload_marker(scratch), itertools.count(1))
    ready_markers = (scratch / f"ready-{n}" for n in itertools.count())
    started: list[tuple[Worker, Path]] = []
    try:
        for _ in range(count):
            marker = next(ready_markers)
            started.append((await start(marker), marker))
        await _until_ready(started, stop)
    except Exception as exc:
        log.error("worker_start_failed", error=str(exc))
        await asyncio.gather(*(worker.stop() for worker, _ in started))
        return 1
    workers = [worker for worker, _ in started]
    if not stop.is_set():
        log.info("serving", pid=os.getpid(), **serving)

    async def keep(slot: int) -> None:
        backoff = 1.0
        while True:
            code = await workers[slot].wait()
            if stop.is_set():
                return
            log.error("worker_exited", slot=slot, code=code, restart_in_s=backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)
            if stop.is_set():
                return
            with contextlib.suppress(Exception):
                workers[slot] = await start(next(ready_markers))

    keepers = [asyncio.ensure_future(keep(slot)) for slot in range(count)]
    await stop.wait()
    log.info("workers_stopping", count=count)
    await asyncio.gather(*(w.stop() for w in workers))
    for keeper in keepers:
        keeper.cancel()
    log.info("stopped")
    return 0
