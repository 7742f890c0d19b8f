"""One worker's service, whatever the transport: its config, store, engine, readiness, HTTP
endpoints and config reloader."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog

from ratelimitd import admin, metrics
from ratelimitd.config.errors import InvalidConfigError
from ratelimitd.config.loader import load_config
from ratelimitd.config.model import Config, Defaults
from ratelimitd.config.watch import ConfigReloader, log_config
from ratelimitd.engine import Engine
from ratelimitd.overlimit_cache import OverLimitCache
from ratelimitd.settings import Settings
from ratelimitd.storage import factory
from ratelimitd.storage.base import Store
from ratelimitd.storage.breaker import CircuitBreaker
from ratelimitd.transports.http import Routes

log = structlog.get_logger(__name__)

# While the store is unreachable at start: how often to ping it, to tell when it is back.
STORE_RETRY_S = 1.0


@dataclass(slots=True)
class Service:
    """What a transport serves."""

    engine: Engine
    readiness: admin.Readiness
    routes: Routes  # every endpoint, for --http-addr
    public_routes: Routes  # what the asgi transport's gRPC port serves besides gRPC
    reloader: ConfigReloader  # started and stopped by the transport, like the listeners


def build_store(settings: Settings) -> Store:
    """The store --redis-url names (redis, rediss, redis+sentinel, redis+cluster), otherwise
    the in-memory store, behind a circuit breaker; ValueError, naming the problem, for a bad
    URL."""
    store = factory.build_store(
        settings.redis_url,
        timeout=settings.redis_timeout,
        memory_max_keys=settings.memory_max_keys,
    )
    if settings.redis_url is None:
        return store  # the memory store cannot fail
    return CircuitBreaker(
        store, threshold=settings.breaker_threshold, cooldown_s=settings.breaker_cooldown
    )


def _defaults(settings: Settings) -> Defaults:
    return Defaults(settings.default_algorithm, settings.failure_mode)


def load(settings: Settings) -> Config | None:
    """The configured rules, or None after logging every error."""
    try:
        return load_config(settings.config, _defaults(settings))
    except InvalidConfigError as exc:
        for error in exc.errors:
            log.error("config_error", error=str(error))
        return None


def build(settings: Settings, config: Config, store: Store) -> Service:
    """The engine and endpoints for `config` on `store`, and the reloader that replaces the
    engine's config when the files change."""
    # Only a shared store makes a round trip worth saving.
    cache = (
        OverLimitCache(settings.local_cache_size)
        if settings.redis_url and settings.local_cache_size
        else None
    )
    engine = settings.engine(config, store, cache)
    readiness = admin.Readiness()

    def apply(new: Config) -> None:
        engine.config = new
        metrics.config_loaded(new.digest, len(new.rules))
        # The config lives until the next reload and has no reference cycles (the one it
        # replaces is freed by reference counting): keep it out of every later collection,
        # whose full passes would otherwise walk it all (tens of ms for 100k tenants).
        gc.freeze()

    apply(config)
    log_config("config_loaded", config)

    return Service(
        engine,
        readiness,
        admin.routes(engine, readiness),
        admin.routes(engine, readiness, admin=False),
        ConfigReloader(
            settings.config, _defaults(settings), config, apply, settings.config_poll_interval
        ),
    )


@contextlib.asynccontextmanager
async def store_reported(store: Store, url: str | None) -> AsyncIterator[None]:
    """Ping the store (named by `url`; None: the in-memory store, which cannot fail) at
    once; when it does not answer, log a warning, and once it answers again, an info line.
    Meanwhile it is pinged every STORE_RETRY_S, never on the request path; the watch ends
    with the context."""
    if url is None or await admin.store_answers(store):
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
        if await admin.store_answers(store):
            log.info("store_reachable", store=shown)
            return
