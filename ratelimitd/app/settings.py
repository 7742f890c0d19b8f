"""Every setting in one place: command-line flags, each also read from an environment
variable named RATELIMITD_<FLAG> (for example --redis-url and RATELIMITD_REDIS_URL)."""

from __future__ import annotations

import argparse
import enum
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ratelimitd.algorithms import ALGORITHMS
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


E = TypeVar("E", bound=enum.Enum)


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
    # are sent, and calls beyond it are refused (README, "One connection, one worker").
    max_streams_per_connection: int | None = None

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


def _choice(kind: type[E]) -> Callable[[str], E]:
    def parse(text: str) -> E:
        try:
            return kind(text.lower())
        except ValueError:
            options = ", ".join(str(m.value) for m in kind)
            raise argparse.ArgumentTypeError(f"'{text}' is not one of {options}") from None

    parse.__name__ = kind.__name__
    return parse


def _one_of(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.lower() not in options:
            raise argparse.ArgumentTypeError(f"'{text}' is not one of {', '.join(options)}")
        return text.lower()

    return parse


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number from 0 to 1")
    return value


def _boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"'{text}' is not true or false")


def _count(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number >= {minimum}")
        if maximum is not None and int(text) > maximum:
            raise argparse.ArgumentTypeError(f"'{text}' is above the maximum, {maximum}")
        return int(text)

    return parse


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive number of seconds")
    return value


def _address(text: str) -> str:
    try:
        split_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _key_prefix(text: str) -> str:
    if "{" in text or "}" in text:
        raise argparse.ArgumentTypeError(f"'{text}': a key prefix cannot contain '{{' or '}}'")
    return text


def add_serve_arguments(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> list[str]:
    """Declare the flags of `serve`, with defaults from the environment where set; return the
    environment variables they read."""
    defaults = Settings(config=())
    variables = [env_name("--config")]

    def option(
        flag: str, help_text: str, default: Any, shown: str | None = None, **kwargs: Any
    ) -> None:
        env = env_name(flag)
        variables.append(env)
        value = environ.get(env, default)
        shown = shown or getattr(default, "value", default)
        parser.add_argument(
            flag, default=value, help=f"{help_text} [env {env}; default {shown}]", **kwargs
        )

    parser.add_argument(
        "--config",
        action="append",
        metavar="PATH",
        help="config file or directory; repeatable "
        f"[env {env_name('--config')}, paths separated by '{os.pathsep}']",
    )
    option(
        "--grpc-addr", "gRPC listen address", defaults.grpc_addr, metavar="HOST:PORT", type=_address
    )
    option(
        "--http-addr",
        "HTTP listen address (/healthcheck)",
        defaults.http_addr,
        metavar="HOST:PORT",
        type=_address,
    )
    option(
        "--redis-url",
        "redis://[user:password@]host:port/db (rediss:// for TLS), "
        "redis+sentinel://[password@]host:port[,host:port]/master, "
        "redis+cluster://host:port[,host:port]; unset: in-memory store",
        None,
        metavar="URL",
    )
    option(
        "--redis-timeout", "seconds per Redis call", defaults.redis_timeout, type=_positive_seconds
    )
    option(
        "--response-headers",
        "rate limit headers besides Retry-After: xratelimit, ietf, legacy or none",
        defaults.response_headers,
        type=_choice(HeaderMode),
    )
    option(
        "--over-limit-body",
        "body of OVER_LIMIT answers: none or problem-json",
        defaults.over_limit_body,
        type=_choice(BodyMode),
    )
    option(
        "--failure-mode",
        "answer of rules without failure_mode when the store fails: allow, deny, or "
        "unavailable (gRPC UNAVAILABLE: Envoy's failure_mode_deny decides)",
        defaults.failure_mode,
        type=_choice(FailureMode),
    )
    option("--tls-cert", "PEM certificate (chain) for gRPC over TLS", None, metavar="PATH")
    option("--tls-key", "PEM private key of --tls-cert", None, metavar="PATH")
    option(
        "--tls-client-ca",
        "PEM CA bundle: require client certificates signed by it (mTLS)",
        None,
        metavar="PATH",
    )
    option(
        "--breaker-threshold",
        "consecutive store failures that open the circuit (answers at once by failure mode)",
        defaults.breaker_threshold,
        type=_count(1),
    )
    option(
        "--breaker-cooldown",
        "seconds the circuit stays open before one probe request tries the store again",
        defaults.breaker_cooldown,
        type=_positive_seconds,
    )
    option(
        "--default-algorithm",
        "algorithm of rules that name none (a file's `defaults:` wins)",
        defaults.default_algorithm,
        type=_one_of(*sorted(ALGORITHMS)),
    )
    shadow_env = env_name("--shadow-mode")
    variables.append(shadow_env)
    try:
        shadow_default = _boolean(environ.get(shadow_env, ""))
    except argparse.ArgumentTypeError as exc:
        parser.error(f"{shadow_env}: {exc}")
    parser.add_argument(
        "--shadow-mode",
        action=argparse.BooleanOptionalAction,
        default=shadow_default,
        help="evaluate and count every limit but answer OK [env "
        f"{shadow_env}=true|false; default false]",
    )
    option(
        "--near-limit-ratio",
        "a limit is near once this share of it is used (for metrics)",
        defaults.near_limit_ratio,
        type=_ratio,
    )
    option("--key-prefix", "prefix of every store key", defaults.key_prefix, type=_key_prefix)
    option(
        "--drain-timeout",
        "seconds in-flight calls get to finish on shutdown",
        defaults.drain_timeout,
        type=_positive_seconds,
    )
    option(
        "--config-poll-interval",
        "seconds between checks of the config files for changes (which are then reloaded)",
        defaults.config_poll_interval,
        type=_positive_seconds,
    )
    option(
        "--transport",
        "grpc (grpc.aio) or asgi (an ASGI app inside Envoy, via pyvoy)",
        defaults.transport,
        type=_choice(Transport),
    )
    option(
        "--workers",
        "processes sharing the ports",
        None,
        shown="one per CPU with Redis, 1 with the in-memory store",
        type=_count(1),
    )
    option(
        "--max-streams-per-connection",
        "concurrent calls a client may have on one HTTP/2 connection: under load, Envoy then "
        "opens more connections, which the workers share",
        None,
        shown="the server's own (Envoy's 1024, grpc's none)",
        metavar="N",
        type=_count(1, MAX_STREAMS_PER_CONNECTION),
    )
    option(
        "--local-cache-size",
        "over-limit keys remembered per process, answered without Redis (0: off)",
        defaults.local_cache_size,
        type=_count(0),
    )
    option(
        "--authz-domain",
        "domain of ext_authz Check calls whose context_extensions name none",
        None,
        shown="none: such calls are answered OK",
        metavar="DOMAIN",
    )
    option(
        "--memory-max-keys",
        "counters the in-memory store keeps at most (then drops the one due to expire first)",
        defaults.memory_max_keys,
        type=_count(1),
    )
    option(
        "--max-request-bytes",
        "largest serialized RateLimitRequest taken (larger: RESOURCE_EXHAUSTED)",
        defaults.max_request_bytes,
        type=_count(1),
    )
    for flag, what in (
        ("--max-descriptors", "descriptors per request"),
        ("--max-entries", "entries per descriptor"),
        ("--max-key-length", "characters of an entry key or a domain"),
        ("--max-value-length", "characters of an entry value"),
    ):
        default = getattr(defaults, flag[2:].replace("-", "_"))
        option(flag, f"most {what} taken (more: INVALID_ARGUMENT)", default, type=_count(1))
    levels = ("debug", "info", "warning", "error")
    option("--log-level", "log level", defaults.log_level, type=_one_of(*levels))
    option("--log-format", "json or console", defaults.log_format, type=_one_of("json", "console"))
    option(
        "--tracing",
        "OpenTelemetry spans: off, otlp (to OTEL_EXPORTER_OTLP_ENDPOINT) or console (stdout); "
        "needs the otel extra",
        defaults.tracing,
        type=_choice(Exporter),
    )
    return variables


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Build Settings from parsed `serve` arguments; --config falls back to the environment."""
    config: Sequence[str] = args.config or [
        p for p in environ.get(env_name("--config"), "").split(os.pathsep) if p
    ]
    return Settings(
        config=tuple(config),
        grpc_addr=args.grpc_addr,
        http_addr=args.http_addr,
        redis_url=args.redis_url or None,
        redis_timeout=args.redis_timeout,
        response_headers=args.response_headers,
        over_limit_body=args.over_limit_body,
        failure_mode=args.failure_mode,
        tls_cert=args.tls_cert or None,
        tls_key=args.tls_key or None,
        tls_client_ca=args.tls_client_ca or None,
        breaker_threshold=args.breaker_threshold,
        breaker_cooldown=args.breaker_cooldown,
        default_algorithm=args.default_algorithm,
        shadow_mode=args.shadow_mode,
        near_limit_ratio=args.near_limit_ratio,
        key_prefix=args.key_prefix,
        drain_timeout=args.drain_timeout,
        config_poll_interval=args.config_poll_interval,
        log_level=args.log_level,
        log_format=args.log_format,
        tracing=args.tracing,
        transport=args.transport,
        workers=args.workers,
        local_cache_size=args.local_cache_size,
        memory_max_keys=args.memory_max_keys,
        authz_domain=args.authz_domain or None,
        max_request_bytes=args.max_request_bytes,
        max_descriptors=args.max_descriptors,
        max_entries=args.max_entries,
        max_key_length=args.max_key_length,
        max_value_length=args.max_value_length,
        max_streams_per_connection=args.max_streams_per_connection,
    )


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
