"""One asgi worker: the ASGI app pyvoy runs inside Envoy (`ratelimitd.app.asgi_worker:app`).

At the lifespan startup it reads its settings from RATELIMITD_* environment variables (so the
supervisor can start any number of Envoy processes on the same port), builds the service and
hands the transport what it serves: the gRPC methods and the public HTTP routes.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

import structlog

from ratelimitd.app import build
from ratelimitd.app.markers import WorkerLink
from ratelimitd.app.quota import quota_rpc
from ratelimitd.app.service import Service
from ratelimitd.app.service import build as build_service
from ratelimitd.app.settings import settings_from_environment, split_address
from ratelimitd.observe import logs
from ratelimitd.observe.metrics import Recorder
from ratelimitd.observe.tracing import TRACER
from ratelimitd.storage.base import Store
from ratelimitd.storage.demand import DemandStore
from ratelimitd.transports.asgi import AsgiApp, Endpoints, OpenStream
from ratelimitd.transports.http import HttpServer
from ratelimitd.transports.rlqs_rpc import RLQS_METHOD
from ratelimitd.transports.rpc import AUTHZ_METHOD, HEALTH_METHOD, RLS_METHOD, Rpc

log = structlog.get_logger(__name__)


class AsgiWorker:
    """The service of one asgi worker process, started and stopped by the ASGI lifespan."""

    def __init__(self, environ: MutableMapping[str, str]) -> None:
        self._environ = environ
        self._service: Service | None = None
        self._store: Store | None = None
        self._demand: DemandStore | None = None
        self._admin: HttpServer | None = None
        self._link: WorkerLink | None = None

    async def start(self) -> Endpoints:
        """Build and start the service; what the app serves from now on. RuntimeError for
        an invalid config, ValueError or SystemExit for bad settings, OSError when the
        --http-addr listener cannot start."""
        settings = settings_from_environment(self._environ)
        logs.configure(settings.log_level, settings.log_format)
        # Before the config loads: a reload asked for from now on must count.
        self._link = WorkerLink.from_environment(self._environ)
        config = build.load(settings)
        if config is None:
            raise RuntimeError("invalid config")
        TRACER.configure(settings.tracing)
        recorder = Recorder()
        self._store = build.build_store(settings, recorder)
        service = build_service(settings, config, self._store, recorder)
        host, port = split_address(settings.http_addr)
        self._admin = HttpServer(service.routes, host, port)
        await self._admin.start()
        self._service = service
        rpc = Rpc(
            service.engine,
            service.readiness,
            settings.authz_domain,
            recorder,
            dynamic_metadata=settings.response_dynamic_metadata,
        )
        streams: dict[str, OpenStream] = {}
        front_door = quota_rpc(settings, service.engine, recorder)
        if front_door is not None:
            quota, self._demand = front_door
            streams[RLQS_METHOD] = quota.open_stream
        service.start()
        service.readiness.serving = True
        if self._link is not None:
            self._link.serve(service.reloader, service.readiness)
        log.info("worker_serving", transport="asgi", pid=os.getpid(), http_addr=settings.http_addr)
        return Endpoints(
            {
                RLS_METHOD: rpc.should_rate_limit,
                AUTHZ_METHOD: rpc.check,
                HEALTH_METHOD: rpc.health_check,
            },
            service.public_routes,
            settings.max_request_bytes,
            streams,
        )

    async def stop(self) -> None:
        """Stop serving: drain the reload link, the service's background work, the HTTP
        listener and the store."""
        if self._link is not None:
            await self._link.stop()
        if self._service is not None:
            self._service.readiness.serving = False
            await self._service.stop()
        if self._admin is not None:
            await self._admin.stop()
        if self._demand is not None:
            await self._demand.close()
        if self._store is not None:
            await self._store.close()


_worker = AsgiWorker(os.environ)
app = AsgiApp(_worker.start, _worker.stop)
