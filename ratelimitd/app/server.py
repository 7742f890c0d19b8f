"""`ratelimitd serve`: validate the config and the listen addresses, then run the service — in
this process (grpc, one worker) or as supervised worker processes (asgi under pyvoy, or
several workers)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

import structlog

from ratelimitd.app import build, service
from ratelimitd.app.markers import WorkerLink
from ratelimitd.app.ports import addresses_free
from ratelimitd.app.quota import quota_rpc
from ratelimitd.app.settings import Settings, Transport, split_address
from ratelimitd.app.workers import asgi_starter, grpc_starter, supervise
from ratelimitd.model.rules import Config
from ratelimitd.observe import tracing
from ratelimitd.observe.metrics import Recorder
from ratelimitd.observe.tracing import TRACER
from ratelimitd.storage import factory
from ratelimitd.storage.base import Store
from ratelimitd.transports.grpc import GrpcTransport
from ratelimitd.transports.http import HttpServer
from ratelimitd.transports.rpc import Rpc

log = structlog.get_logger(__name__)


async def serve(settings: Settings) -> int:
    """Run the service; return the process exit code."""
    # Before the config loads: a reload the supervisor asks for from now on must count.
    link = WorkerLink.from_environment(os.environ)
    config = build.load(settings)
    if config is None:
        return 1
    try:
        build.tls_files(settings)
    except ValueError as exc:
        log.error("bad_tls_settings", error=str(exc))
        return 1
    try:
        tracing.check(settings.tracing)
    except RuntimeError as exc:
        log.error("tracing_unavailable", error=str(exc))
        return 1
    try:
        # Built here so a bad URL stops the start once, not every worker over and over.
        recorder = Recorder()
        store = build.build_store(settings, recorder)
    except ValueError as exc:
        log.error("bad_redis_url", error=str(exc))
        return 1
    if link is not None:  # a supervisor's worker: the supervisor checked and reports the rest
        return await serve_grpc(settings, config, store, recorder, link)
    workers = settings.worker_count
    if workers > 1 and not settings.redis_url:
        log.error(
            "workers_need_redis", workers=workers, reason="the in-memory store is per process"
        )
        return 1
    if not addresses_free(settings):
        await store.close()
        return 1
    if settings.transport is Transport.ASGI or workers > 1:
        starter = asgi_starter if settings.transport is Transport.ASGI else grpc_starter
        try:
            async with service.store_reported(store, settings.redis_url):
                with tempfile.TemporaryDirectory(prefix="ratelimitd-") as scratch:
                    return await supervise(
                        starter(settings, Path(scratch)),
                        workers,
                        Path(scratch),
                        serving_fields(settings, config),
                    )
        finally:
            await store.close()
    return await serve_grpc(settings, config, store, recorder, None)


def serving_fields(settings: Settings, config: Config) -> dict[str, Any]:
    """What the `serving` event tells about a service that has started, whatever its
    transport."""
    return {
        "transport": settings.transport.value,
        "grpc_addr": settings.grpc_addr,
        "http_addr": settings.http_addr,
        "workers": settings.worker_count,
        "max_streams_per_connection": settings.max_streams_per_connection,
        "files": list(config.files),
        "domains": sorted(config.domains),
        "rules": len(config.rules),
        "store": factory.redact(settings.redis_url) if settings.redis_url else "memory",
        "default_algorithm": settings.default_algorithm,
        "failure_mode": settings.failure_mode.value,
    }


async def serve_grpc(
    settings: Settings, config: Config, store: Store, recorder: Recorder, link: WorkerLink | None
) -> int:
    """Serve gRPC (grpc.aio) and the HTTP endpoints in this process until SIGTERM/SIGINT,
    reloading the config when its files change, on SIGHUP, and, as a worker (`link`), when
    its supervisor asks; everything counted by `recorder`."""
    TRACER.configure(settings.tracing)
    running_service = service.build(settings, config, store, recorder)
    reloader = running_service.reloader
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloader.request)
    async with contextlib.AsyncExitStack() as running:
        # Unwound in reverse: gRPC drains first, then HTTP stops, then the reloader and the
        # store.
        running.push_async_callback(store.close)
        if link is None:  # the process started alone: no supervisor reports on the store
            await running.enter_async_context(service.store_reported(store, settings.redis_url))
        running_service.start()
        running.push_async_callback(running_service.stop)
        try:
            await _listen(running, settings, running_service, recorder)
        except (OSError, RuntimeError, ValueError) as exc:
            log.error("listen_failed", error=str(exc))
            return 1
        running_service.readiness.serving = True
        if link is None:
            log.info("serving", pid=os.getpid(), **serving_fields(settings, config))
        else:
            running.push_async_callback(link.stop)
            link.serve(reloader, running_service.readiness)
            log.info(
                "worker_serving",
                transport=settings.transport.value,
                pid=os.getpid(),
                grpc_addr=settings.grpc_addr,
                http_addr=settings.http_addr,
            )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("draining", timeout_s=settings.drain_timeout)
        running_service.readiness.serving = False
    log.info("stopped")
    return 0


async def _listen(
    running: contextlib.AsyncExitStack,
    settings: Settings,
    running_service: service.Service,
    recorder: Recorder,
) -> None:
    """Start the HTTP endpoints and the gRPC port, each stopped by `running` (gRPC first,
    draining its calls)."""
    http_host, http_port = split_address(settings.http_addr)
    http_server = HttpServer(running_service.routes, http_host, http_port)
    await http_server.start()
    running.push_async_callback(http_server.stop)
    quota = None
    front_door = quota_rpc(settings, running_service.engine, recorder)
    if front_door is not None:
        quota, demand = front_door
        running.push_async_callback(demand.close)
    rpc = Rpc(
        running_service.engine,
        running_service.readiness,
        settings.authz_domain,
        recorder,
        dynamic_metadata=settings.response_dynamic_metadata,
    )
    grpc_transport = GrpcTransport(
        rpc,
        settings.grpc_addr,
        build.tls_files(settings),
        settings.max_request_bytes,
        settings.max_streams_per_connection,
        quota,
    )
    await grpc_transport.start()
    running.push_async_callback(grpc_transport.stop, settings.drain_timeout)
