"""Every setting in one place: command-line flags, each also read from an environment
variable named RATELIMITD_<FLAG> (for example --redis-url and RATELIMITD_REDIS_URL)."""

from __future__ import annotations

import argparse
import enum
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ratelimitd.algorithms import ALGORITHMS
from ratelimitd.app.flags import (
    FlagDeclarer,
    choice,
    count,
    key_prefix,
    one_of,
    positive_seconds,
    ratio,
)
from ratelimitd.core.engine import DEFAULT_NEAR_LIMIT_RATIO
from ratelimitd.core.headers import HeaderMode
from ratelimitd.core.keys import DEFAULT_PREFIX
from ratelimitd.core.problem import BodyMode
from ratelimitd.core.validation import DEFAULT_REQUEST_LIMITS, RequestLimits
from ratelimitd.model.rules import DEFAULT_ALGORITHM, FailureMode
from ratelimitd.observe.tracing import Exporter
from ratelimitd.storage.memory import DEFAULT_MAX_KEYS
from ratelimitd.transports.grpc_status import MAX_MESSAGE_BYTES

ENV_PREFIX = "RATELIMITD_"
# Internal, set by the supervisor for ASGI workers: a file whose appearance means "drain now"
# (Envoy takes the signals, so this is how the app inside it learns of a shutdown).
DRAIN_MARKER_ENV = f"{ENV_PREFIX}DRAIN_MARKER"
# Internal, likewise: a file the supervisor rewrites on SIGHUP, each time with new contents.
RELOAD_MARKER_ENV = f"{ENV_PREFIX}RELOAD_MARKER"
# Internal, likewise: a file a worker creates once it serves.
READY_MARKER_ENV = f"{ENV_PREFIX}READY_MARKER"

# The largest value of SETTINGS_MAX_CONCURRENT_STREAMS Envoy takes (2^31 - 1).
MAX_STREAMS_PER_CONNECTION = 2**31 - 1


class Transport(enum.Enum):
    """How gRPC is served."""

    GRPC = "grpc"  # grpc.aio in this process
    ASGI = "asgi"  # an ASGI app hosted by Envoy itself (pyvoy)


@dataclass(frozen=True, slots=True)
class Settings:
    """Settings of `ratelimitd serve`."""

    config: tuple[str, ...]
    grpc_addr: str = "0.0.0.0:8081"
    http_addr: str = "127.0.0.1:8080"
    redis_url: str | None = None
    redis_timeout: float = 0.05
    response_headers: HeaderMode = HeaderMode.XRATELIMIT
    over_limit_body: BodyMode = BodyMode.NONE
    failure_mode: FailureMode = FailureMode.ALLOW
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    breaker_threshold: int = 5
    breaker_cooldown: float = 0.5
    default_algorithm: str = DEFAULT_ALGORITHM
    shadow_mode: bool = False
    quota_mode: bool = False
    near_limit_ratio: float = DEFAULT_NEAR_LIMIT_RATIO
    key_prefix: str = DEFAULT_PREFIX
    drain_timeout: float = 5.0
    config_poll_interval: float = 1.0
    log_level: str = "info"
    log_format: str = "json"
    tracing: Exporter = Exporter.OFF
    transport: Transport = Transport.ASGI  # bench/RESULTS.md: several times grpc.aio's rate
    workers: int | None = None  # None: one per CPU with Redis, one with the memory store
    local_cache_size: int = 100_000
    memory_max_keys: int = DEFAULT_MAX_KEYS
    authz_domain: str | None = None
    max_request_bytes: int = MAX_MESSAGE_BYTES
    max_descriptors: int = DEFAULT_REQUEST_LIMITS.max_descriptors
    max_entries: int = DEFAULT_REQUEST_LIMITS.max_entries
    max_key_length: int = DEFAULT_REQUEST_LIMITS.max_key_length
    max_value_length: int = DEFAULT_REQUEST_LIMITS.max_value_length
    # None: the server's own (Envoy's 1024; grpc's, none). Not capped by default: a client
    # learns the cap from the server's SETTINGS only after its first calls on a new connection
    # are sent, and calls beyond it are refused (docs/operations.md, "One connection, one worker").
    max_streams_per_connection: int | None = None
    response_dynamic_metadata: bool = False  # the reference's RESPONSE_DYNAMIC_METADATA

    @property
    def worker_count(self) -> int:
        """Processes to run: the in-memory store lives in one process, so it gets one."""
        if self.workers is not None:
            return self.workers
        return (os.cpu_count() or 1) if self.redis_url else 1

    def request_limits(self) -> RequestLimits:
        """The bounds every request is checked against."""
        return RequestLimits(
            self.max_descriptors, self.max_entries, self.max_key_length, self.max_value_length
        )

    def to_environment(self) -> dict[str, str]:
        """These settings as RATELIMITD_* variables, which settings_from_environment reads
        back: how a supervisor hands them to its worker processes."""
        environ = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, enum.Enum):
                value = value.value
            elif isinstance(value, bool):
                value = str(value).lower()
            elif isinstance(value, tuple):
                value = os.pathsep.join(value)
            environ[ENV_PREFIX + name.upper()] = str(value)
        return environ


def env_name(flag: str) -> str:
    """The environment variable read for a flag: --redis-url -> RATELIMITD_REDIS_URL."""
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def _address(text: str) -> str:
    try:
        split_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _listen_flags(flags: FlagDeclarer) -> None:
    flags.option("--grpc-addr", "gRPC listen address", metavar="HOST:PORT", type=_address)
    flags.option(
        "--http-addr", "HTTP listen address (/healthcheck)", metavar="HOST:PORT", type=_address
    )


def _store_flags(flags: FlagDeclarer) -> None:
    flags.option(
        "--redis-url",
        "redis://[user:password@]host:port/db (rediss:// for TLS), "
        "redis+sentinel://[password@]host:port[,host:port]/master, "
        "redis+cluster://host:port[,host:port]; unset: in-memory store",
        metavar="URL",
    )
    flags.option("--redis-timeout", "seconds per Redis call", type=positive_seconds)


def _answer_flags(flags: FlagDeclarer) -> None:
    flags.option(
        "--response-headers",
        "rate limit headers besides Retry-After: xratelimit, ietf, legacy or none",
        type=choice(HeaderMode),
    )
    flags.option(
        "--over-limit-body",
        "body of OVER_LIMIT answers: none or problem-json",
        type=choice(BodyMode),
    )
    flags.switch(
        "--response-dynamic-metadata",
        "answers carry dynamic metadata for Envoy (the request, the metadata of the limits "
        "passed, the limits that fired) as the reference's RESPONSE_DYNAMIC_METADATA",
    )
    flags.option(
        "--failure-mode",
        "answer of rules without failure_mode when the store fails: allow, deny, or "
        "unavailable (gRPC UNAVAILABLE: Envoy's failure_mode_deny decides)",
        type=choice(FailureMode),
    )


def _tls_flags(flags: FlagDeclarer) -> None:
    flags.option("--tls-cert", "PEM certificate (chain) for gRPC over TLS", metavar="PATH")
    flags.option("--tls-key", "PEM private key of --tls-cert", metavar="PATH")
    flags.option(
        "--tls-client-ca",
        "PEM CA bundle: require client certificates signed by it (mTLS)",
        metavar="PATH",
    )


def _breaker_flags(flags: FlagDeclarer) -> None:
    flags.option(
        "--breaker-threshold",
        "consecutive store failures that open the circuit (answers at once by failure mode)",
        type=count(1),
    )
    flags.option(
        "--breaker-cooldown",
        "seconds the circuit stays open before one probe request tries the store again",
        type=positive_seconds,
    )


def _limit_flags(flags: FlagDeclarer) -> None:
    flags.option(
        "--default-algorithm",
        "algorithm of rules that name none (a file's `defaults:` wins)",
        type=one_of(*sorted(ALGORITHMS)),
    )
    flags.switch("--shadow-mode", "evaluate and count every limit but answer OK")
    flags.switch(
        "--quota-mode",
        "every limit is a quota: an exceeded one answers OVER_LIMIT for its descriptor, but "
        "rejects the request only if all of the request's quotas are exceeded",
    )
    flags.option(
        "--near-limit-ratio",
        "a limit is near once this share of it is used (for metrics)",
        type=ratio,
    )
    flags.option("--key-prefix", "prefix of every store key", type=key_prefix)


def _process_flags(flags: FlagDeclarer) -> None:
    flags.option(
        "--drain-timeout",
        "seconds in-flight calls get to finish on shutdown",
        type=positive_seconds,
    )
    flags.option(
        "--config-poll-interval",
        "seconds between checks of the config files for changes (which are then reloaded)",
        type=positive_seconds,
    )
    flags.option(
        "--transport",
        "grpc (grpc.aio) or asgi (an ASGI app inside Envoy, via pyvoy)",
        type=choice(Transport),
    )
    flags.option(
        "--workers",
        "processes sharing the ports",
        shown="one per CPU with Redis, 1 with the in-memory store",
        type=count(1),
    )
    flags.option(
        "--max-streams-per-connection",
        "concurrent calls a client may have on one HTTP/2 connection: under load, Envoy then "
        "opens more connections, which the workers share",
        shown="the server's own (Envoy's 1024, grpc's none)",
        metavar="N",
        type=count(1, MAX_STREAMS_PER_CONNECTION),
    )


def _memory_flags(flags: FlagDeclarer) -> None:
    # --authz-domain sits between the two memory bounds: --help has always listed it there.
    flags.option(
        "--local-cache-size",
        "over-limit keys remembered per process, answered without Redis (0: off)",
        type=count(0),
    )
    flags.option(
        "--authz-domain",
        "domain of ext_authz Check calls whose context_extensions name none",
        shown="none: such calls are answered OK",
        metavar="DOMAIN",
    )
    flags.option(
        "--memory-max-keys",
        "counters the in-memory store keeps at most (then drops the one due to expire first)",
        type=count(1),
    )


def _request_bound_flags(flags: FlagDeclarer) -> None:
    flags.option(
        "--max-request-bytes",
        "largest serialized RateLimitRequest taken (larger: RESOURCE_EXHAUSTED)",
        type=count(1),
    )
    for flag, what in (
        ("--max-descriptors", "descriptors per request"),
        ("--max-entries", "entries per descriptor"),
        ("--max-key-length", "characters of an entry key or a domain"),
        ("--max-value-length", "characters of an entry value"),
    ):
        flags.option(flag, f"most {what} taken (more: INVALID_ARGUMENT)", type=count(1))


def _output_flags(flags: FlagDeclarer) -> None:
    flags.option("--log-level", "log level", type=one_of("debug", "info", "warning", "error"))
    flags.option("--log-format", "json or console", type=one_of("json", "console"))
    flags.option(
        "--tracing",
        "OpenTelemetry spans: off, otlp (to OTEL_EXPORTER_OTLP_ENDPOINT) or console (stdout); "
        "needs the otel extra",
        type=choice(Exporter),
    )


# In the order --help lists them.
_FLAG_GROUPS = (
    _listen_flags,
    _store_flags,
    _answer_flags,
    _tls_flags,
    _breaker_flags,
    _limit_flags,
    _process_flags,
    _memory_flags,
    _request_bound_flags,
    _output_flags,
)


def add_serve_arguments(
    parser: argparse.ArgumentParser, environ: Mapping[str, str], heading: str | None = None
) -> list[str]:
    """Declare the flags of `serve`, with defaults from the environment where set (in a help
    section of their own when `heading` is given); return the environment variables they read."""
    section = None if heading is None else parser.add_argument_group(heading)
    (parser if section is None else section).add_argument(
        "--config",
        action="append",
        metavar="PATH",
        help="config file or directory; repeatable "
        f"[env {env_name('--config')}, paths separated by '{os.pathsep}']",
    )
    flags = FlagDeclarer(parser, environ, Settings(config=()), env_name, section)
    for group in _FLAG_GROUPS:
        group(flags)
    return [env_name("--config"), *flags.variables]


# Optional text settings whose empty value (RATELIMITD_REDIS_URL="", say) means unset.
_EMPTY_MEANS_UNSET = ("redis_url", "tls_cert", "tls_key", "tls_client_ca", "authz_domain")


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Build Settings from parsed `serve` arguments; --config falls back to the environment."""
    config: Sequence[str] = args.config or [
        p for p in environ.get(env_name("--config"), "").split(os.pathsep) if p
    ]
    # Each field has the flag of its name (config, completed above, is replaced).
    values = {name: getattr(args, name) for name in Settings.__dataclass_fields__}
    values.update((name, values[name] or None) for name in _EMPTY_MEANS_UNSET)
    return Settings(**{**values, "config": tuple(config)})


def settings_from_environment(environ: Mapping[str, str]) -> Settings:
    """Settings from RATELIMITD_* variables alone, validated as the flags are."""
    parser = argparse.ArgumentParser(prog="ratelimitd serve")
    add_serve_arguments(parser, environ)
    return settings_from(parser.parse_args([]), environ)


def split_address(address: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); ValueError, naming what is wrong, for
    anything else."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        example = f"127.0.0.1:{port if port.isdigit() else 8081}"
        raise ValueError(f"'{address}' is not HOST:PORT (for example {example})")
    if int(port) > 65535:
        raise ValueError(f"'{address}': port {port} is out of range (0-65535)")
    return host.strip("[]") or "0.0.0.0", int(port)
