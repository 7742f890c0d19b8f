"""The translation of each group of the reference's variables but Redis's (redis_url.py): the
config directory, the listen addresses, gRPC TLS, response headers and tracing."""

from __future__ import annotations

import os

from ratelimitd.app.reference_env.reader import InvalidError, Reader
from ratelimitd.app.reference_env.variables import (
    GRPC_ADDRESS,
    GRPC_TLS,
    GRPC_TLS_FILES,
    HEADER_NAMES,
    HEADERS,
    HTTP_ADDRESS,
    RUNTIME,
    RUNTIME_DEFAULTS,
    TRACING,
)


def translate_runtime(r: Reader) -> None:
    """RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/RUNTIME_APPDIRECTORY -> RATELIMITD_CONFIG."""
    present = r.claim(RUNTIME, "RATELIMITD_CONFIG")
    if "CONFIG_TYPE" in present:
        source = r.value("CONFIG_TYPE") or ""
        if source.upper() != "FILE":
            raise InvalidError("CONFIG_TYPE", f"'{source}' is not supported (only FILE)")
        r.result.accepted["CONFIG_TYPE"] = "files are the only config source"
    names = [name for name in present if name in RUNTIME_DEFAULTS]
    if not names:
        return
    root, *rest = (r.value(name) or default for name, default in RUNTIME_DEFAULTS.items())
    # As Go's filepath.Join: the parts are always nested, even when one starts with '/'.
    directory = os.path.normpath(os.path.join(root, *(part.strip("/") for part in rest if part)))
    for name in names:
        if os.pathsep in (r.value(name) or ""):
            raise InvalidError(name, f"a path containing '{os.pathsep}' is not supported")
    r.set("RATELIMITD_CONFIG", directory, names)


def translate_grpc_address(r: Reader) -> None:
    """GRPC_HOST and GRPC_PORT -> RATELIMITD_GRPC_ADDR."""
    present = r.claim(GRPC_ADDRESS, "RATELIMITD_GRPC_ADDR")
    if "GRPC_UDS" in present:
        raise InvalidError("GRPC_UDS", "unix sockets are not supported: set GRPC_PORT instead")
    if present:
        r.set("RATELIMITD_GRPC_ADDR", _address(r, "GRPC_HOST", "GRPC_PORT", 8081), present)


def translate_http_address(r: Reader) -> None:
    """PORT (and HOST) -> RATELIMITD_HTTP_ADDR, on all interfaces unless HOST says otherwise,
    as in the reference."""
    if r.value("PORT") is None:
        if r.value("HOST") is not None:
            # Shells such as tcsh export HOST as the machine's name: alone it proves nothing.
            r.result.ignored["HOST"] = "read only together with PORT"
        return
    present = r.claim(HTTP_ADDRESS, "RATELIMITD_HTTP_ADDR")
    if present:
        r.set("RATELIMITD_HTTP_ADDR", _address(r, "HOST", "PORT", 8080), present)


def _address(r: Reader, host_variable: str, port_variable: str, default_port: int) -> str:
    host = r.value(host_variable) or "0.0.0.0"
    port = r.value(port_variable)
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise InvalidError(port_variable, f"'{port}' is not a port number (1-65535)")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{int(port) if port else default_port}"


def translate_grpc_tls(r: Reader) -> None:
    """GRPC_SERVER_USE_TLS with its certificate, key and client CA -> RATELIMITD_TLS_*."""
    present = r.claim(GRPC_TLS, *GRPC_TLS_FILES.values())
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
        raise InvalidError(
            "GRPC_CLIENT_TLS_SAN", "not supported: any certificate the CA signed is let in"
        )
    for name in ("GRPC_SERVER_TLS_CERT", "GRPC_SERVER_TLS_KEY"):
        if name not in present:
            raise InvalidError(name, "not set, but GRPC_SERVER_USE_TLS is true")
    for name, target in GRPC_TLS_FILES.items():
        if name in present:
            switch = ["GRPC_SERVER_USE_TLS"] if target == "RATELIMITD_TLS_CERT" else []
            r.set(target, r.value(name) or "", [*switch, name])


def translate_response_headers(r: Reader) -> None:
    """LIMIT_RESPONSE_HEADERS_ENABLED -> RATELIMITD_RESPONSE_HEADERS: legacy (the reference's
    RateLimit-* headers) or none."""
    present = r.claim(HEADERS, "RATELIMITD_RESPONSE_HEADERS")
    if not present:
        return
    names = [name for name in present if name in HEADER_NAMES]
    if not r.flag("LIMIT_RESPONSE_HEADERS_ENABLED"):
        r.result.ignored.update(
            (name, "LIMIT_RESPONSE_HEADERS_ENABLED is not true") for name in names
        )
        if "LIMIT_RESPONSE_HEADERS_ENABLED" in present:
            r.set("RATELIMITD_RESPONSE_HEADERS", "none", ["LIMIT_RESPONSE_HEADERS_ENABLED"])
        return
    for name in names:
        if (r.value(name) or "").lower() != HEADER_NAMES[name].lower():
            raise InvalidError(
                name, f"custom header names are not supported (only {HEADER_NAMES[name]})"
            )
    r.set("RATELIMITD_RESPONSE_HEADERS", "legacy", present)


def translate_tracing(r: Reader) -> None:
    """TRACING_ENABLED -> RATELIMITD_TRACING: otlp or off."""
    present = r.claim(TRACING, "RATELIMITD_TRACING")
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
