"""`ratelimitd serve`: validate the config, then run the service — in this process (grpc, one
worker) or as supervised worker processes (asgi under pyvoy, or several workers)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
from pathlib import Path

import structlog

from ratelimitd import service, tracing
from ratelimitd.config.model import Config
from ratelimitd.metrics import Recorder
from ratelimitd.settings import Settings, Transport, split_address
from ratelimitd.storage import factory
from ratelimitd.storage.base import Store
from ratelimitd.tracing import TRACER
from ratelimitd.transports.grpc import GrpcTransport
from ratelimitd.transports.http import HttpServer
from ratelimitd.transports.rpc import Rpc
from ratelimitd.workers import asgi_starter, grpc_starter, supervise

log = structlog.get_logger(__name__)


async def serve(settings: Settings) -> int:
    """Run the service; return the process exit code."""
    config = service.load(settings)
    if config is None:
        return 1
    try:
        settings.tls()
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
        store = service.build_store(settings, recorder)
    except ValueError as exc:
        log.error("bad_redis_url", error=str(exc))
        return 1
    workers = settings.worker_count
    if workers > 1 and not settings.redis_url:
        log.error(
            "workers_need_redis", workers=workers, reason="the in-memory store is per process"
        )
        return 1
    if settings.transport is Transport.ASGI or workers > 1:
        await store.close()
        starter = asgi_starter if settings.transport is Transport.ASGI else grpc_starter
        with tempfile.TemporaryDirectory(prefix="ratelimitd-") as scratch:
            return await supervise(starter(settings, Path(scratch)), workers)
    return await serve_grpc(settings, config, store, recorder)


async def serve_grpc(settings: Settings, config: Config, store: Store, recorder: Recorder) -> int:
    """One process serving gRPC (grpc.aio) and the HTTP endpoints until SIGTERM/SIGINT,
    reloading the config when its files change or on SIGHUP."""
    TRACER.configure(settings.tracing)
    running_service = service.build(settings, config, store, recorder)
    reloader = running_service.reloader
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloader.request)
    async with contextlib.AsyncExitStack() as running:
        # Unwound in reverse: gRPC drains first, then HTTP stops, then the reloader and the
        # store.
        running.push_async_callback(store.close)
        running_service.start()
        running.push_async_callback(running_service.stop)
        try:
            http_host, http_port = split_address(settings.http_addr)
            http_server = HttpServer(running_service.routes, http_host, http_port)
            await http_server.start()
            running.push_async_callback(http_server.stop)
            grpc_transport = GrpcTransport(
                Rpc(
                    running_service.engine,
                    running_service.readiness,
                    settings.authz_domain,
                    recorder,
                ),
                settings.grpc_addr,
                settings.tls(),
                settings.max_request_bytes,
            )
            await grpc_transport.start()
            running.push_async_callback(grpc_transport.stop, settings.drain_timeout)
        except (OSError, RuntimeError, ValueError) as exc:
            log.error("listen_failed", error=str(exc))
            return 1
        running_service.readiness.serving = True
        log.info(
            "serving",
            transport="grpc",
            pid=os.getpid(),
            grpc_addr=settings.grpc_addr,
            http_addr=settings.http_addr,
            store=factory.redact(settings.redis_url) if settings.redis_url else "memory",
            domains=sorted(config.domains),
            rules=len(config.rules),
            files=list(config.files),
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
