"""The table of envoyproxy/ratelimit's environment variables: which ratelimitd reads, in which
groups, and which it accepts or ignores with the reason it reports (docs/migrating.md)."""

from __future__ import annotations

# The reference's config directory is ROOT/SUBDIRECTORY/APPDIRECTORY, with these defaults.
RUNTIME_DEFAULTS = {
    "RUNTIME_ROOT": "/srv/runtime_data/current",
    "RUNTIME_SUBDIRECTORY": "",
    "RUNTIME_APPDIRECTORY": "config",
}

_METRICS = "no statsd: Prometheus metrics are served at GET /metrics on the HTTP port"
_PIPELINING = "not needed: each worker sends the Redis calls of one event-loop turn as a pipeline"
_XDS = "not supported: ratelimitd reads its config from files only"

# Set or not, ratelimitd behaves the way these settings ask for (or better).
ACCEPTED = {
    "USE_PROMETHEUS": "metrics are always on, at GET /metrics on the HTTP port",
    "RUNTIME_WATCH_ROOT": "changes are picked up either way: a swap of the root symlink and "
    "edits inside the directory (every RATELIMITD_CONFIG_POLL_INTERVAL seconds)",
    "RUNTIME_IGNOREDOTFILES": "dot-files and dot-directories are always skipped",
    "HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED": "/healthcheck answers 200 only once the config "
    "is loaded",
    "REDIS_HEALTH_CHECK_ACTIVE_CONNECTION": "/healthcheck fails while Redis does not answer",
    "STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT": "rejected hits never count",
}

# Reference settings without an equivalent here: reported, never an error.
IGNORED = {
    "REDIS_POOL_SIZE": _PIPELINING,
    "REDIS_POOL_ON_EMPTY_BEHAVIOR": _PIPELINING,
    "REDIS_PIPELINE_WINDOW": _PIPELINING,
    "REDIS_PIPELINE_LIMIT": _PIPELINING,
    "REDIS_USE_EXPLICIT_PIPELINE": _PIPELINING,
    "REDIS_TIMEOUT": "not mapped: RATELIMITD_REDIS_TIMEOUT is how long a decision waits for "
    "Redis before failure modes answer (default 0.05 s), not a connection timeout",
    **{
        f"REDIS_PERSECOND{suffix}": "not supported: per-second limits share the Redis of REDIS_URL"
        for suffix in (
            "",
            "_SOCKET_TYPE",
            "_TYPE",
            "_URL",
            "_POOL_SIZE",
            "_AUTH",
            "_TLS",
            "_SENTINEL_AUTH",
            "_PIPELINE_WINDOW",
            "_PIPELINE_LIMIT",
            "_USE_EXPLICIT_PIPELINE",
            "_TIMEOUT",
            "_POOL_ON_EMPTY_BEHAVIOR",
        )
    },
    "EXPIRATION_JITTER_MAX_SECONDS": "not needed: each key expires as soon as it would read "
    "as a fresh counter",
    **dict.fromkeys(
        (
            "USE_STATSD",
            "STATSD_HOST",
            "STATSD_PORT",
            "USE_DOG_STATSD",
            "USE_DOG_STATSD_MOGRIFIERS",
            "EXTRA_TAGS",
            "STATS_FLUSH_INTERVAL",
            "DISABLE_STATS",
            "PROMETHEUS_ADDR",
            "PROMETHEUS_PATH",
            "PROMETHEUS_MAPPER_YAML",
        ),
        _METRICS,
    ),
    "DEBUG_HOST": "no debug port: /rlconfig is served on the HTTP port",
    "DEBUG_PORT": "no debug port: /rlconfig is served on the HTTP port",
    "GRPC_MAX_CONNECTION_AGE": "not supported: connections are not aged out",
    "GRPC_MAX_CONNECTION_AGE_GRACE": "not supported: connections are not aged out",
    # The OpenTelemetry SDK reads its own variables, in every worker: they are the way.
    "TRACING_SERVICE_NAME": "not mapped: set OTEL_SERVICE_NAME (default ratelimitd)",
    "TRACING_SERVICE_NAMESPACE": "not mapped: set OTEL_RESOURCE_ATTRIBUTES=service.namespace=...",
    "TRACING_SERVICE_INSTANCE_ID": "not mapped: set "
    "OTEL_RESOURCE_ATTRIBUTES=service.instance.id=...",
    "TRACING_SAMPLING_RATE": "not mapped: set OTEL_TRACES_SAMPLER=parentbased_traceidratio and "
    "OTEL_TRACES_SAMPLER_ARG",
    "MERGE_DOMAIN_CONFIG": "not supported: a domain defined in two files is a config error",
    "FORCE_START_WITHOUT_INITIAL_CONFIG": "not supported: serve refuses to start without a "
    "valid config",
    "REDIS_CLUSTER_PIPELINE_PARALLELISM": "not needed: with a cluster, each batch goes to "
    "every node at once, one pipeline per node",
    "PROMETHEUS_RESPONSE_TIME_AS_MILLISECONDS": "not supported: durations are in seconds "
    "(ratelimitd_request_duration_seconds, as Prometheus names them): multiply by 1000 in "
    "queries",
    **dict.fromkeys(
        (
            "MEMCACHE_HOST_PORT",
            "MEMCACHE_SRV",
            "MEMCACHE_SRV_REFRESH",
            "MEMCACHE_MAX_IDLE_CONNS",
            "MEMCACHE_TLS",
            "MEMCACHE_TLS_CLIENT_CERT",
            "MEMCACHE_TLS_CLIENT_KEY",
            "MEMCACHE_TLS_CACERT",
            "MEMCACHE_TLS_SKIP_HOSTNAME_VERIFICATION",
        ),
        "not supported: counters live in Redis or in memory",
    ),
    **dict.fromkeys(
        (
            "CONFIG_GRPC_XDS_NODE_ID",
            "CONFIG_GRPC_XDS_NODE_METADATA",
            "CONFIG_GRPC_XDS_SERVER_URL",
            "CONFIG_GRPC_XDS_SERVER_CONNECT_RETRY_INTERVAL",
            "CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS",
            "CONFIG_GRPC_XDS_SERVER_USE_TLS",
            "CONFIG_GRPC_XDS_CLIENT_TLS_CERT",
            "CONFIG_GRPC_XDS_CLIENT_TLS_KEY",
            "CONFIG_GRPC_XDS_SERVER_TLS_CACERT",
            "CONFIG_GRPC_XDS_SERVER_TLS_SAN",
            "XDS_CLIENT_BACKOFF_INITIAL_INTERVAL",
            "XDS_CLIENT_BACKOFF_MAX_INTERVAL",
            "XDS_CLIENT_BACKOFF_RANDOM_FACTOR",
            "XDS_CLIENT_BACKOFF_JITTER",
            "XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES",
        ),
        _XDS,
    ),
}

# Prefixes naming families of reference settings without an equivalent here (each member
# reported as ignored, whatever its name).
IGNORED_FAMILIES = {
    "REDIS_STARTUP_": "not needed: serve starts without waiting for Redis and keeps trying "
    "it; until it answers, the rules' failure modes answer and /healthcheck says 503 "
    "(store_unreachable, then store_reachable, in the log)",
}

# Groups of variables translated together, each into one or a few of ours.
REDIS = (
    "REDIS_URL",
    "REDIS_TYPE",
    "REDIS_SOCKET_TYPE",
    "REDIS_AUTH",
    "REDIS_TLS",
    "REDIS_TLS_CACERT",
    "REDIS_TLS_CLIENT_CERT",
    "REDIS_TLS_CLIENT_KEY",
    "REDIS_TLS_SKIP_HOSTNAME_VERIFICATION",
    "REDIS_SENTINEL_AUTH",
    "BACKEND_TYPE",
)
RUNTIME = (*RUNTIME_DEFAULTS, "CONFIG_TYPE")
GRPC_ADDRESS = ("GRPC_HOST", "GRPC_PORT", "GRPC_UDS")
HTTP_ADDRESS = ("HOST", "PORT")
# Variable -> what it sets (a rediss:// URL option, one of our variables).
REDIS_TLS_FILES = {
    "REDIS_TLS_CACERT": "ssl_ca_certs",
    "REDIS_TLS_CLIENT_CERT": "ssl_certfile",
    "REDIS_TLS_CLIENT_KEY": "ssl_keyfile",
}
GRPC_TLS_FILES = {
    "GRPC_SERVER_TLS_CERT": "RATELIMITD_TLS_CERT",
    "GRPC_SERVER_TLS_KEY": "RATELIMITD_TLS_KEY",
    "GRPC_CLIENT_TLS_CACERT": "RATELIMITD_TLS_CLIENT_CA",
}
# The only header names taken: the ones ratelimitd sends.
HEADER_NAMES = {
    "LIMIT_LIMIT_HEADER": "RateLimit-Limit",
    "LIMIT_REMAINING_HEADER": "RateLimit-Remaining",
    "LIMIT_RESET_HEADER": "RateLimit-Reset",
}
GRPC_TLS = ("GRPC_SERVER_USE_TLS", *GRPC_TLS_FILES, "GRPC_CLIENT_TLS_SAN")
HEADERS = ("LIMIT_RESPONSE_HEADERS_ENABLED", *HEADER_NAMES)
TRACING = ("TRACING_ENABLED", "TRACING_EXPORTER_PROTOCOL")
# One variable each, translated into one of ours by a value parser.
SIMPLE = {
    "LOG_LEVEL": "RATELIMITD_LOG_LEVEL",
    "LOG_FORMAT": "RATELIMITD_LOG_FORMAT",
    "SHADOW_MODE": "RATELIMITD_SHADOW_MODE",
    "RESPONSE_DYNAMIC_METADATA": "RATELIMITD_RESPONSE_DYNAMIC_METADATA",
    "NEAR_LIMIT_RATIO": "RATELIMITD_NEAR_LIMIT_RATIO",
    "CACHE_KEY_PREFIX": "RATELIMITD_KEY_PREFIX",
    "LOCAL_CACHE_SIZE_IN_BYTES": "RATELIMITD_LOCAL_CACHE_SIZE",
    "QUOTA_MODE": "RATELIMITD_QUOTA_MODE",
}
# Every reference variable read here.
VARIABLES = frozenset(
    (*REDIS, *RUNTIME, *GRPC_ADDRESS, *HTTP_ADDRESS, *GRPC_TLS, *HEADERS, *TRACING)
) | frozenset((*SIMPLE, *ACCEPTED, *IGNORED))
