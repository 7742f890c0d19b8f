"""envoyproxy/ratelimit's environment variables, read as aliases of ours, so that a deployment
of the reference starts with its environment unchanged (docs/migrating.md has the full table).

`translate` turns the reference's variables into the RATELIMITD_* variables they mean. Ours
win: a reference variable is read only while the RATELIMITD_* variable it maps to is unset, and
a flag wins over both. A value that cannot be honoured without changing what clients or
operators get (a unix socket, memcache, xDS config, custom header names) is an error naming
the variable; a variable whose job ratelimitd does another way, or not at all (pool sizes,
statsd, the debug port), is reported as accepted or ignored. Empty values count as unset.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

import structlog

from ratelimitd.app.settings import ENV_PREFIX

log = structlog.get_logger(__name__)

# The reference's config directory is ROOT/SUBDIRECTORY/APPDIRECTORY, with these defaults.
RUNTIME_DEFAULTS = {
    "RUNTIME_ROOT": "/srv/runtime_data/current",
    "RUNTIME_SUBDIRECTORY": "",
    "RUNTIME_APPDIRECTORY": "config",
}
# The reference sizes its over-limit cache in bytes, ours in keys: an entry (key, deadline,
# LRU links) costs about this much with a 40-character key (tracemalloc).
CACHE_ENTRY_BYTES = 300

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
    "RESPONSE_DYNAMIC_METADATA": "not supported: no dynamic metadata in answers",
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

_REDIS = (
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
_RUNTIME = (*RUNTIME_DEFAULTS, "CONFIG_TYPE")
_GRPC_ADDRESS = ("GRPC_HOST", "GRPC_PORT", "GRPC_UDS")
_HTTP_ADDRESS = ("HOST", "PORT")
_REDIS_TLS_FILES = {
    "REDIS_TLS_CACERT": "ssl_ca_certs",
    "REDIS_TLS_CLIENT_CERT": "ssl_certfile",
    "REDIS_TLS_CLIENT_KEY": "ssl_keyfile",
}
_GRPC_TLS_FILES = {
    "GRPC_SERVER_TLS_CERT": "RATELIMITD_TLS_CERT",
    "GRPC_SERVER_TLS_KEY": "RATELIMITD_TLS_KEY",
    "GRPC_CLIENT_TLS_CACERT": "RATELIMITD_TLS_CLIENT_CA",
}
_HEADER_NAMES = {
    "LIMIT_LIMIT_HEADER": "RateLimit-Limit",
    "LIMIT_REMAINING_HEADER": "RateLimit-Remaining",
    "LIMIT_RESET_HEADER": "RateLimit-Reset",
}
_GRPC_TLS = ("GRPC_SERVER_USE_TLS", *_GRPC_TLS_FILES, "GRPC_CLIENT_TLS_SAN")
_HEADERS = ("LIMIT_RESPONSE_HEADERS_ENABLED", *_HEADER_NAMES)
_TRACING = ("TRACING_ENABLED", "TRACING_EXPORTER_PROTOCOL")
_SIMPLE = {
    "LOG_LEVEL": "RATELIMITD_LOG_LEVEL",
    "LOG_FORMAT": "RATELIMITD_LOG_FORMAT",
    "SHADOW_MODE": "RATELIMITD_SHADOW_MODE",
    "NEAR_LIMIT_RATIO": "RATELIMITD_NEAR_LIMIT_RATIO",
    "CACHE_KEY_PREFIX": "RATELIMITD_KEY_PREFIX",
    "LOCAL_CACHE_SIZE_IN_BYTES": "RATELIMITD_LOCAL_CACHE_SIZE",
}
# Every reference variable read here.
VARIABLES = frozenset(
    (*_REDIS, *_RUNTIME, *_GRPC_ADDRESS, *_HTTP_ADDRESS, *_GRPC_TLS, *_HEADERS, *_TRACING)
) | frozenset((*_SIMPLE, *ACCEPTED, *IGNORED))
_LOG_LEVELS = {  # logrus levels -> ours
    "panic": "error",
    "fatal": "error",
    "error": "error",
    "warn": "warning",
    "warning": "warning",
    "info": "info",
    "debug": "debug",
    "trace": "debug",
}
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[^\s:\[\],/@]+):(?P<port>[0-9]{1,5})")


@dataclass
class Translation:
    """What the reference's variables in one environment mean here."""

    # RATELIMITD_* variables implied by the reference's (only ones the environment leaves unset)
    environ: dict[str, str] = field(default_factory=dict)
    # reference variable -> (the RATELIMITD_* variable it set, what to log; never a secret)
    read: dict[str, tuple[str, str]] = field(default_factory=dict)
    accepted: dict[str, str] = field(default_factory=dict)  # variable -> how we behave
    ignored: dict[str, str] = field(default_factory=dict)  # variable -> why it has no effect
    overridden: dict[str, str] = field(default_factory=dict)  # variable -> what wins
    errors: list[str] = field(default_factory=list)  # "VARIABLE: problem"

    def note(self, final: Mapping[str, str]) -> dict[str, dict[str, str]]:
        """The fields of the `reference_environment` startup event, given the settings in
        force as RATELIMITD_* variables (Settings.to_environment): a variable whose value a
        flag replaced counts as overridden. Empty when no reference variable set anything,
        which is also the case in worker processes (they get every setting as RATELIMITD_*)."""
        read: dict[str, str] = {}
        overridden = dict(self.overridden)
        for name, (target, shown) in self.read.items():
            if final.get(target) == self.environ[target]:
                read[name] = shown
            else:
                overridden[name] = "--" + target.removeprefix(ENV_PREFIX).lower().replace("_", "-")
        if not read:
            return {}
        fields = {
            "read": read,
            "accepted": self.accepted,
            "ignored": self.ignored,
            "overridden": overridden,
        }
        return {kind: names for kind, names in fields.items() if names}

    def log(self, final: Mapping[str, str]) -> None:
        """Log which reference variables were read and what became of them, as one event: a
        warning if some have no effect here."""
        fields = self.note(final)
        if fields:
            emit = log.warning if "ignored" in fields else log.info
            emit("reference_environment", **fields)


class _InvalidError(ValueError):
    """A reference variable with a value that cannot be used; the message names it."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")


class _Reader:
    """Reads one environment into a Translation."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.result = Translation()

    def value(self, name: str) -> str | None:
        """The variable's value; None when unset or empty."""
        return self._environ.get(name) or None

    def flag(self, name: str) -> bool:
        """A boolean variable, read as the reference reads it (Go's strconv.ParseBool)."""
        text = self.value(name)
        try:
            return text is not None and _go_bool(text)
        except ValueError as exc:
            raise _InvalidError(name, str(exc)) from None

    def claim(self, names: Iterable[str], *targets: str) -> list[str]:
        """The variables of `names` that are set, if they may set `targets` (none of ours
        is set); else they are recorded as overridden and the answer is empty."""
        present = [name for name in names if self.value(name) is not None]
        winner = next((target for target in targets if target in self._environ), None)
        if winner is None:
            return present
        for name in present:
            self.result.overridden[name] = winner
        return []

    def set(self, target: str, value: str, names: Iterable[str], shown: str | None = None) -> None:
        """Record that `names` set `target` to `value` (logged as `shown`, if given)."""
        self.result.environ[target] = value
        for name in names:
            self.result.read[name] = (target, f"{target}={value if shown is None else shown}")

    def simple(self, name: str, target: str, parse: Callable[[str], str]) -> None:
        """One variable that maps to one of ours through `parse`."""
        if self.claim([name], target):
            try:
                value = parse(self.value(name) or "")
            except ValueError as exc:
                raise _InvalidError(name, str(exc)) from None
            self.set(target, value, [name])


def translate(environ: Mapping[str, str]) -> Translation:
    """What the reference's variables in `environ` mean here (see the module docstring);
    every unusable value is reported in `errors`, none raises."""
    reader = _Reader(environ)
    groups = (
        _redis,
        _runtime,
        _grpc_address,
        _http_address,
        _grpc_tls,
        _response_headers,
        _tracing,
    )
    steps: list[Callable[[], None]] = [functools.partial(group, reader) for group in groups]
    parsers = {
        "LOG_LEVEL": _log_level,
        "LOG_FORMAT": _log_format,
        "SHADOW_MODE": _shadow_mode,
        "NEAR_LIMIT_RATIO": _ratio,
        "CACHE_KEY_PREFIX": _key_prefix,
        "LOCAL_CACHE_SIZE_IN_BYTES": _local_cache_size,
    }
    steps += [
        functools.partial(reader.simple, name, _SIMPLE[name], parse)
        for name, parse in parsers.items()
    ]
    for step in steps:
        try:
            step()
        except _InvalidError as exc:
            reader.result.errors.append(str(exc))
    for table, into in ((ACCEPTED, reader.result.accepted), (IGNORED, reader.result.ignored)):
        into.update((name, why) for name, why in table.items() if reader.value(name))
    return reader.result


def _redis(r: _Reader) -> None:
    """REDIS_URL (host:port, or a list for sentinel and cluster) with REDIS_TYPE, REDIS_AUTH
    and REDIS_TLS* -> one RATELIMITD_REDIS_URL."""
    present = r.claim(_REDIS, "RATELIMITD_REDIS_URL")
    if not present:
        return
    backend = r.value("BACKEND_TYPE") or "redis"
    if backend.lower() != "redis":
        raise _InvalidError("BACKEND_TYPE", f"'{backend}' is not supported (only redis)")
    address = r.value("REDIS_URL")
    if address is None:
        raise _InvalidError(
            "REDIS_URL",
            f"not set, though {' and '.join(present)} {'is' if len(present) == 1 else 'are'}: "
            "the reference's default, a unix socket, is not supported; set REDIS_URL=host:port",
        )
    kind = (r.value("REDIS_TYPE") or "single").lower()
    if kind not in ("single", "sentinel", "cluster"):
        raise _InvalidError("REDIS_TYPE", f"'{kind}' is not single, sentinel or cluster")
    socket_type = (r.value("REDIS_SOCKET_TYPE") or "tcp").lower()
    if socket_type not in ("tcp", "unix"):
        raise _InvalidError("REDIS_SOCKET_TYPE", f"'{socket_type}' is not tcp or unix")
    if kind == "single" and (socket_type == "unix" or address.startswith("/")):
        raise _InvalidError(
            "REDIS_SOCKET_TYPE" if socket_type == "unix" else "REDIS_URL",
            "unix sockets are not supported: set REDIS_SOCKET_TYPE=tcp and REDIS_URL=host:port",
        )
    if "@" in address or "://" in address:  # not echoed: it may hold a password
        raise _InvalidError(
            "REDIS_URL",
            "expected host:port as the reference takes it, with credentials in REDIS_AUTH "
            "(a redis:// URL goes in RATELIMITD_REDIS_URL)",
        )
    hosts = address.split(",")
    master = ""
    if kind == "sentinel":
        master, *hosts = hosts
        if not master or not hosts:
            raise _InvalidError("REDIS_URL", "expected master_name,host:port[,host:port...]")
    elif kind == "single" and len(hosts) > 1:
        raise _InvalidError("REDIS_URL", "a list of servers needs REDIS_TYPE=sentinel or cluster")
    for host in hosts:
        match = _HOST_PORT.fullmatch(host)
        if match is None or not 0 < int(match["port"]) < 65536:
            raise _InvalidError("REDIS_URL", f"'{host}' is not host:port")
    query = _redis_tls(r, kind)
    if "REDIS_SENTINEL_AUTH" in present:
        if kind == "sentinel":
            raise _InvalidError(
                "REDIS_SENTINEL_AUTH", "not supported: sentinels are asked without a password"
            )
        r.result.ignored["REDIS_SENTINEL_AUTH"] = "used only with REDIS_TYPE=sentinel"
    credentials = _credentials(r.value("REDIS_AUTH"))

    def url(userinfo: str) -> str:
        if kind == "sentinel":
            return f"redis+sentinel://{userinfo}{','.join(hosts)}/{quote(master, safe='')}"
        if kind == "cluster":
            return f"redis+cluster://{userinfo}{','.join(hosts)}"
        return f"{'rediss' if query is not None else 'redis'}://{userinfo}{hosts[0]}{query or ''}"

    names = [name for name in present if name not in r.result.ignored]
    r.set("RATELIMITD_REDIS_URL", url(credentials), names, url("***@" if credentials else ""))


def _redis_tls(r: _Reader, kind: str) -> str | None:
    """The query string of a rediss:// URL for REDIS_TLS and its file settings, or None for
    no TLS (then the file settings are reported as ignored, as the reference ignores them)."""
    if not r.flag("REDIS_TLS"):
        for name in (*_REDIS_TLS_FILES, "REDIS_TLS_SKIP_HOSTNAME_VERIFICATION"):
            if r.value(name) is not None:
                r.result.ignored[name] = "REDIS_TLS is not true"
        return None
    if kind != "single":
        raise _InvalidError("REDIS_TLS", f"TLS to a Redis {kind} is not supported")
    if (r.value("REDIS_TLS_CLIENT_CERT") is None) != (r.value("REDIS_TLS_CLIENT_KEY") is None):
        raise _InvalidError("REDIS_TLS_CLIENT_CERT", "and REDIS_TLS_CLIENT_KEY go together")
    options = [
        f"{option}={quote(path, safe='/')}"
        for name, option in _REDIS_TLS_FILES.items()
        if (path := r.value(name)) is not None
    ]
    if r.flag("REDIS_TLS_SKIP_HOSTNAME_VERIFICATION"):
        options.append("ssl_check_hostname=false")  # the certificate is still verified
    return ("?" + "&".join(options)) if options else ""


def _credentials(auth: str | None) -> str:
    """REDIS_AUTH (`password` or `user:password`, split at the first ':' as the reference
    does) as the percent-encoded userinfo of a URL, with its '@'."""
    if auth is None:
        return ""
    user, colon, password = auth.partition(":")
    if not colon:
        user, password = "", auth
    return f"{quote(user, safe='')}:{quote(password, safe='')}@"


def _runtime(r: _Reader) -> None:
    """RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/RUNTIME_APPDIRECTORY -> RATELIMITD_CONFIG."""
    present = r.claim(_RUNTIME, "RATELIMITD_CONFIG")
    if "CONFIG_TYPE" in present:
        source = r.value("CONFIG_TYPE") or ""
        if source.upper() != "FILE":
            raise _InvalidError("CONFIG_TYPE", f"'{source}' is not supported (only FILE)")
        r.result.accepted["CONFIG_TYPE"] = "files are the only config source"
    names = [name for name in present if name in RUNTIME_DEFAULTS]
    if not names:
        return
    root, *rest = (r.value(name) or default for name, default in RUNTIME_DEFAULTS.items())
    # As Go's filepath.Join: the parts are always nested, even when one starts with '/'.
    directory = os.path.normpath(os.path.join(root, *(part.strip("/") for part in rest if part)))
    for name in names:
        if os.pathsep in (r.value(name) or ""):
            raise _InvalidError(name, f"a path containing '{os.pathsep}' is not supported")
    r.set("RATELIMITD_CONFIG", directory, names)


def _grpc_address(r: _Reader) -> None:
    """GRPC_HOST and GRPC_PORT -> RATELIMITD_GRPC_ADDR."""
    present = r.claim(_GRPC_ADDRESS, "RATELIMITD_GRPC_ADDR")
    if "GRPC_UDS" in present:
        raise _InvalidError("GRPC_UDS", "unix sockets are not supported: set GRPC_PORT instead")
    if present:
        r.set("RATELIMITD_GRPC_ADDR", _address(r, "GRPC_HOST", "GRPC_PORT", 8081), present)


def _http_address(r: _Reader) -> None:
    """PORT (and HOST) -> RATELIMITD_HTTP_ADDR, on all interfaces unless HOST says otherwise,
    as in the reference."""
    if r.value("PORT") is None:
        if r.value("HOST") is not None:
            # Shells such as tcsh export HOST as the machine's name: alone it proves nothing.
            r.result.ignored["HOST"] = "read only together with PORT"
        return
    present = r.claim(_HTTP_ADDRESS, "RATELIMITD_HTTP_ADDR")
    if present:
        r.set("RATELIMITD_HTTP_ADDR", _address(r, "HOST", "PORT", 8080), present)


def _address(r: _Reader, host_variable: str, port_variable: str, default_port: int) -> str:
    host = r.value(host_variable) or "0.0.0.0"
    port = r.value(port_variable)
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise _InvalidError(port_variable, f"'{port}' is not a port number (1-65535)")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{int(port) if port else default_port}"


def _grpc_tls(r: _Reader) -> None:
    """GRPC_SERVER_USE_TLS with its certificate, key and client CA -> RATELIMITD_TLS_*."""
    present = r.claim(_GRPC_TLS, *_GRPC_TLS_FILES.values())
    if not present:
        return
    if not r.flag("GRPC_SERVER_USE_TLS"):
        for name in present:
            if name == "GRPC_SERVER_USE_TLS":
                r.result.accepted[name] = "gRPC without TLS"
            else:
                r.result.ignored[name] = "GRPC_SERVER_USE_TLS is not true"
        return
    if "GRPC_CLIENT_TLS_SAN" in present:
        # Ignoring it would accept clients the reference refuses.
        raise _InvalidError(
            "GRPC_CLIENT_TLS_SAN", "not supported: any certificate the CA signed is let in"
        )
    for name in ("GRPC_SERVER_TLS_CERT", "GRPC_SERVER_TLS_KEY"):
        if name not in present:
            raise _InvalidError(name, "not set, but GRPC_SERVER_USE_TLS is true")
    for name, target in _GRPC_TLS_FILES.items():
        if name in present:
            switch = ["GRPC_SERVER_USE_TLS"] if target == "RATELIMITD_TLS_CERT" else []
            r.set(target, r.value(name) or "", [*switch, name])


def _response_headers(r: _Reader) -> None:
    """LIMIT_RESPONSE_HEADERS_ENABLED -> RATELIMITD_RESPONSE_HEADERS: legacy (the reference's
    RateLimit-* headers) or none."""
    present = r.claim(_HEADERS, "RATELIMITD_RESPONSE_HEADERS")
    if not present:
        return
    names = [name for name in present if name in _HEADER_NAMES]
    if not r.flag("LIMIT_RESPONSE_HEADERS_ENABLED"):
        r.result.ignored.update(
            (name, "LIMIT_RESPONSE_HEADERS_ENABLED is not true") for name in names
        )
        if "LIMIT_RESPONSE_HEADERS_ENABLED" in present:
            r.set("RATELIMITD_RESPONSE_HEADERS", "none", ["LIMIT_RESPONSE_HEADERS_ENABLED"])
        return
    for name in names:
        if (r.value(name) or "").lower() != _HEADER_NAMES[name].lower():
            raise _InvalidError(
                name, f"custom header names are not supported (only {_HEADER_NAMES[name]})"
            )
    r.set("RATELIMITD_RESPONSE_HEADERS", "legacy", present)


def _tracing(r: _Reader) -> None:
    """TRACING_ENABLED -> RATELIMITD_TRACING: otlp or off."""
    present = r.claim(_TRACING, "RATELIMITD_TRACING")
    if not present:
        return
    enabled = r.flag("TRACING_ENABLED")
    if "TRACING_EXPORTER_PROTOCOL" in present:
        protocol = r.value("TRACING_EXPORTER_PROTOCOL") or ""
        if not enabled:
            r.result.ignored["TRACING_EXPORTER_PROTOCOL"] = "TRACING_ENABLED is not true"
        elif protocol.lower() == "grpc":
            r.result.accepted["TRACING_EXPORTER_PROTOCOL"] = "spans go out as OTLP over gRPC"
        else:
            # Not an error: answers do not depend on it, and the event says what to change.
            r.result.ignored["TRACING_EXPORTER_PROTOCOL"] = (
                "spans go out as OTLP over gRPC only: OTEL_EXPORTER_OTLP_ENDPOINT must name "
                "the collector's gRPC port (usually 4317)"
            )
    if "TRACING_ENABLED" in present:
        r.set("RATELIMITD_TRACING", "otlp" if enabled else "off", ["TRACING_ENABLED"])


def _go_bool(text: str) -> bool:
    if text.lower() in ("1", "t", "true"):
        return True
    if text.lower() in ("0", "f", "false"):
        return False
    raise ValueError(f"'{text}' is not true or false")


def _shadow_mode(text: str) -> str:
    return "true" if _go_bool(text) else "false"


def _log_level(text: str) -> str:
    level = _LOG_LEVELS.get(text.lower())
    if level is None:
        raise ValueError(f"'{text}' is not one of {', '.join(_LOG_LEVELS)}")
    return level


def _log_format(text: str) -> str:
    formats = {"json": "json", "text": "console"}
    if text.lower() not in formats:
        raise ValueError(f"'{text}' is not text or json")
    return formats[text.lower()]


def _ratio(text: str) -> str:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise ValueError(f"'{text}' is not a number from 0 to 1")
    return str(value)


def _key_prefix(text: str) -> str:
    if "{" in text or "}" in text:
        raise ValueError("a key prefix cannot contain '{' or '}' (they would pick cluster slots)")
    return text


def _local_cache_size(text: str) -> str:
    if not text.isdigit():
        raise ValueError(f"'{text}' is not a whole number of bytes")
    size = int(text)
    return "0" if size == 0 else str(max(1, size // CACHE_ENTRY_BYTES))
