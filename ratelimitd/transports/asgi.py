"""ASGI transport: gRPC unary over HTTP/2 (RLS, Authorization and grpc.health.v1 Check) and
the HTTP endpoints, on one port, for an ASGI server that speaks HTTP/2 with trailers — pyvoy,
which runs the app inside Envoy (`--transport asgi`).

The app serves what its `start` callback returns at the ASGI lifespan startup (see
ratelimitd.app.asgi_worker, which builds the service from RATELIMITD_* variables).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import structlog

from ratelimitd.observe.tracing import Metadata
from ratelimitd.transports.grpc_status import (
    DEADLINE_EXCEEDED,
    FRAME_PREFIX_BYTES,
    INTERNAL,
    MAX_MESSAGE_BYTES,
    OK,
    RESOURCE_EXHAUSTED,
    GrpcError,
    frame,
    parse_timeout,
    unframe,
)
from ratelimitd.transports.http import Response, Routes

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# A unary gRPC method: the request message and the call's metadata in, the response out.
Method = Callable[[bytes, Metadata], Awaitable[bytes]]

log = structlog.get_logger(__name__)

# Sent unchanged on every call: built once.
_GRPC_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/grpc")],
    "trailers": True,
}
_OK_TRAILERS = {
    "type": "http.response.trailers",
    "headers": [(b"grpc-status", b"0")],
    "more_trailers": False,
}


# grpc-timeout values seen, parsed: Envoy sends the same one on every call of a route.
_TIMEOUTS: dict[bytes, float] = {}
_TIMEOUTS_KEPT = 256


def grpc_timeout(headers: Sequence[tuple[bytes, bytes]]) -> float | None:
    """The call's deadline in seconds from its grpc-timeout header, if any."""
    for name, value in headers:
        if name == b"grpc-timeout":
            seconds = _TIMEOUTS.get(value)
            if seconds is None:
                seconds = parse_timeout(value)
                if len(_TIMEOUTS) >= _TIMEOUTS_KEPT:
                    _TIMEOUTS.clear()  # clients counting their deadline down: rare, bounded
                _TIMEOUTS[value] = seconds
            return seconds
    return None


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None when it exceeds `limit` bytes."""
    message = await receive()
    if not message.get("more_body", False):  # the usual case: the whole body at once
        body: bytes = message.get("body", b"")
        return body if len(body) <= limit else None
    chunks = []
    size = 0
    while True:
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()


@dataclass(frozen=True, slots=True)
class Endpoints:
    """What the app serves once started: gRPC methods by path, HTTP routes for every other
    path, and the largest request message taken."""

    methods: dict[str, Method]
    routes: Routes
    max_request_bytes: int


class AsgiApp:
    """The ASGI application. The lifespan startup calls `start` for what to serve (a failure,
    as OSError, RuntimeError, ValueError or SystemExit, fails the startup with its message);
    the lifespan shutdown calls `stop`."""

    def __init__(
        self, start: Callable[[], Awaitable[Endpoints]], stop: Callable[[], Awaitable[None]]
    ) -> None:
        self._start = start
        self._stop = stop
        self._routes: Routes | None = None
        self._max_request_bytes = MAX_MESSAGE_BYTES
        # The gRPC methods by path, once started (until then every path is HTTP's: 503).
        self._methods: dict[str, Method] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = self._methods.get(scope["path"]) if scope["type"] == "http" else None
        if method is None:
            if scope["type"] == "http":
                await self._http(scope, receive, send)
            elif scope["type"] == "lifespan":
                await self._lifespan(receive, send)
            return
        # A gRPC call, handled here rather than in a method of its own: every coroutine
        # frame between the host and the store is resumed once per request.
        status, message, payload = OK, "", b""
        try:
            limit = self._max_request_bytes
            body = await read_body(receive, limit + FRAME_PREFIX_BYTES)
            if body is None:
                raise GrpcError(RESOURCE_EXHAUSTED, f"request larger than {limit} bytes")
            metadata = scope["headers"]
            timeout = grpc_timeout(metadata)
            if timeout is None:
                payload = frame(await method(unframe(body), metadata))
            else:
                # Checked after the call rather than with a timer per call: the store bounds
                # the call's duration itself (--redis-timeout), and an answer after the
                # deadline must not pass for a valid one.
                loop = asyncio.get_running_loop()
                deadline = loop.time() + timeout
                payload = frame(await method(unframe(body), metadata))
                if loop.time() > deadline:
                    raise GrpcError(DEADLINE_EXCEEDED, "deadline exceeded")
        except GrpcError as exc:
            status, message, payload = exc.status, str(exc), b""
        except Exception:
            log.exception("grpc_call_failed", path=scope["path"])
            status, message = INTERNAL, "internal error"
        await send(_GRPC_START)
        await send({"type": "http.response.body", "body": payload, "more_body": False})
        if status == OK:
            await send(_OK_TRAILERS)
            return
        trailers = [(b"grpc-status", str(status).encode())]
        trailers.append((b"grpc-message", quote(message, safe=" ").encode()))
        await send({"type": "http.response.trailers", "headers": trailers, "more_trailers": False})

    # -- HTTP endpoints ---------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive, MAX_MESSAGE_BYTES)
        if self._routes is None:
            response = Response(HTTPStatus.SERVICE_UNAVAILABLE, b"starting\n")
        elif body is None:
            response = Response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"body too large\n")
        else:
            response = await self._routes.dispatch(scope["method"], scope["path"], body)
        headers = [(b"content-type", response.content_type.encode())]
        headers += [(k.encode(), v.encode()) for k, v in response.headers]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body, "more_body": False})

    # -- lifespan ---------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    endpoints = await self._start()
                except (OSError, RuntimeError, ValueError, SystemExit) as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                self._max_request_bytes = endpoints.max_request_bytes
                self._routes = endpoints.routes
                self._methods = endpoints.methods
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._stop()
                await send({"type": "lifespan.shutdown.complete"})
                return
