"""Whether the listen addresses can be bound, checked once before any worker starts: a port
in use then makes one clear line, instead of an error deep inside a worker (inside Envoy, for
the asgi transport) after it has started."""

from __future__ import annotations

import socket

import structlog

from ratelimitd.app.settings import Settings, split_address

log = structlog.get_logger(__name__)


def bind_error(address: str) -> str | None:
    """Why a listener like the workers' cannot bind `address` now, or None if it can. Like
    theirs, the probe sets SO_REUSEPORT: an address that sockets of this user share that way
    (other workers, ours or another ratelimitd's) is free; one any other socket holds is not."""
    host, port = split_address(address)
    if port == 0:  # any free port: nothing to check
        return None
    try:
        family, kind, protocol, _, where = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            probe.bind(where)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def addresses_free(settings: Settings) -> bool:
    """Whether both listen addresses can be bound; otherwise log, for the first that cannot,
    one line naming its flag, the address and why."""
    for flag, address in (("--grpc-addr", settings.grpc_addr), ("--http-addr", settings.http_addr)):
        error = bind_error(address)
        if error is not None:
            log.error("listen_failed", flag=flag, address=address, error=error)
            return False
    return True
