"""One worker's service, whatever the transport: its engine, readiness, HTTP endpoints,
config reloader and observers, wired together. With app.build (the parts) and the process
entry points (server, asgi_worker), the only place where the parts meet: transports receive
what they serve."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import structlog

from ratelimitd.app.build import build_engine, defaults
from ratelimitd.app.settings import Settings
from ratelimitd.config.watch import ConfigReloader, log_config
from ratelimitd.core.engine import Engine
from ratelimitd.model.observer import watch_loop_lag
from ratelimitd.model.rules import Config
from ratelimitd.observe import metrics
from ratelimitd.storage import factory
from ratelimitd.storage.base import Store
from ratelimitd.transports import admin
from ratelimitd.transports.health import Readiness, store_answers
from ratelimitd.transports.http import Routes

log = structlog.get_logger(__name__)

# While the store is unreachable at start: how often to ping it, to tell when it is back.
STORE_RETRY_S = 1.0


@dataclass(slots=True)
class Service:
    """What a transport serves; `start` and `stop` run its background work (config reloads,
    publishing metrics), like the transport's listeners."""

    engine: Engine
    readiness: Readiness
    routes: Routes  # every endpoint, for --http-addr
    public_routes: Routes  # what the asgi transport's gRPC port serves besides gRPC
    reloader: ConfigReloader
    recorder: metrics.Recorder
    _tasks: list[asyncio.Future[None]] = field(default_factory=list, init=False)

    def start(self) -> None:
        """Start watching the config, the event loop's lag and publishing metrics, on the
        running loop."""
        self.reloader.start()
        self._tasks = [
            asyncio.ensure_future(watch_loop_lag(self.recorder)),
            asyncio.ensure_future(self.recorder.publish_periodically()),
        ]

    async def stop(self) -> None:
        """Stop the background work (publishing what was counted one last time)."""
        await self.reloader.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def build(settings: Settings, config: Config, store: Store, recorder: metrics.Recorder) -> Service:
    """The engine and endpoints for `config` on `store`, and the reloader that replaces the
    engine's config when the files change; everything counted by `recorder`."""
    engine = build_engine(settings, config, store, recorder)
    readiness = Readiness()

    def apply(new: Config) -> None:
        engine.config = new
        recorder.config_loaded(new.digest, len(new.rules))
        # The config lives until the next reload and has no reference cycles (the one it
        # replaces is freed by reference counting): keep it out of every later collection,
        # whose full passes would otherwise walk it all (tens of ms for 100k tenants).
        gc.freeze()

    apply(config)
    log_config("config_loaded", config)

    return Service(
        engine,
        readiness,
        admin.routes(engine, readiness, recorder, settings.response_dynamic_metadata),
        admin.routes(engine, readiness, recorder, settings.response_dynamic_metadata, admin=False),
        ConfigReloader(
            settings.config,
            defaults(settings),
            config,
            apply,
            settings.config_poll_interval,
            recorder,
        ),
        recorder,
    )


@contextlib.asynccontextmanager
async def store_reported(store: Store, url: str | None) -> AsyncIterator[None]:
    """Ping the store (named by `url`; None: the in-memory store, which cannot fail) at
    once; when it does not answer, log a warning, and once it answers again, an info line.
    Meanwhile it is pinged every STORE_RETRY_S, never on the request path; the watch ends
    with the context."""
    if url is None or await store_answers(store):
        yield
        return
    shown = factory.redact(url)
    log.warning("store_unreachable", store=shown, retry_s=STORE_RETRY_S)
    watch = asyncio.ensure_future(_until_reachable(store, shown))
    try:
        yield
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch


async def _until_reachable(store: Store, shown: str) -> None:
    while True:
        await asyncio.sleep(STORE_RETRY_S)
        if await store_answers(store):
            log.info("store_reachable", store=shown)
            return
