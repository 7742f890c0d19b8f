"""The parts a service is made of, built from its settings: the config, the store, the engine
and the gRPC port's TLS files. Free of gRPC and protobuf, so `ratelimitd explain` builds the
same engine as `serve` without loading them."""

from __future__ import annotations

from pathlib import Path

import structlog

from ratelimitd.app.settings import Settings
from ratelimitd.config.errors import InvalidConfigError
from ratelimitd.config.loader import load_config
from ratelimitd.core.engine import Engine
from ratelimitd.core.overlimit_cache import OverLimitCache
from ratelimitd.model.observer import NO_OBSERVER, Observer
from ratelimitd.model.rules import Config, Defaults
from ratelimitd.storage import factory
from ratelimitd.storage.base import Store
from ratelimitd.storage.breaker import CircuitBreaker
from ratelimitd.transports.tls import Tls

log = structlog.get_logger(__name__)


def defaults(settings: Settings) -> Defaults:
    """What a rule leaves unsaid: the default algorithm and failure mode."""
    return Defaults(
        settings.default_algorithm, settings.failure_mode, quota_mode=settings.quota_mode
    )


def load(settings: Settings) -> Config | None:
    """The configured rules, or None after logging every error."""
    try:
        return load_config(settings.config, defaults(settings))
    except InvalidConfigError as exc:
        for error in exc.errors:
            log.error("config_error", error=str(error))
        return None


def build_store(settings: Settings, observer: Observer = NO_OBSERVER) -> Store:
    """The store --redis-url names (redis, rediss, redis+sentinel, redis+cluster), otherwise
    the in-memory store, behind a circuit breaker; ValueError, naming the problem, for a bad
    URL. `observer` sees its batches and circuit changes."""
    return factory.build_store(
        settings.redis_url,
        timeout=settings.redis_timeout,
        memory_max_keys=settings.memory_max_keys,
        observer=observer,
        breaker=CircuitBreaker(
            threshold=settings.breaker_threshold,
            cooldown_s=settings.breaker_cooldown,
            observer=observer,
        ),
    )


def build_engine(
    settings: Settings, config: Config, store: Store, observer: Observer = NO_OBSERVER
) -> Engine:
    """An engine deciding `config` on `store` as the settings say, reporting its decisions to
    `observer`; with a shared store, it answers known over-limit keys locally."""
    # Only a shared store makes a round trip worth saving.
    cache = (
        OverLimitCache(settings.local_cache_size)
        if settings.redis_url and settings.local_cache_size
        else None
    )
    return Engine(
        config,
        store,
        header_mode=settings.response_headers,
        body_mode=settings.over_limit_body,
        key_prefix=settings.key_prefix,
        shadow_mode=settings.shadow_mode,
        near_limit_ratio=settings.near_limit_ratio,
        over_limit_cache=cache,
        request_limits=settings.request_limits(),
        observer=observer,
    )


def tls_files(settings: Settings) -> Tls | None:
    """The gRPC port's TLS files, or None for plaintext; ValueError if incomplete."""
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise ValueError("--tls-cert and --tls-key go together")
    client_ca = Path(settings.tls_client_ca) if settings.tls_client_ca is not None else None
    files = Tls(Path(settings.tls_cert), Path(settings.tls_key), client_ca)
    for path in (files.cert, files.key, files.client_ca):
        if path is not None and not path.is_file():
            raise ValueError(f"TLS file not found: {path}")
    return files
