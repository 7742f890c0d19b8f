"""ASGI transport: gRPC unary over HTTP/2 (RLS, Authorization and grpc.health.v1 Check), the
bidirectional RLQS stream, and the HTTP endpoints, on one port, for an ASGI server that
speaks HTTP/2 with trailers and full duplex bodies — pyvoy, which runs the app inside Envoy
(`--transport asgi`).

The app serves what its `start` callback returns at the ASGI lifespan startup (see
ratelimitd.app.asgi_worker, which builds the service from RATELIMITD_* variables).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import quote

import structlog

from ratelimitd.observe.tracing import Metadata
from ratelimitd.transports.grpc_status import (
    DEADLINE_EXCEEDED,
    FRAME_PREFIX_BYTES,
    INTERNAL,
    INVALID_ARGUMENT,
    MAX_MESSAGE_BYTES,
    OK,
    RESOURCE_EXHAUSTED,
    UNIMPLEMENTED,
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


class StreamCall(Protocol):
    """One bidirectional stream: each message in may answer one out; close at its end."""

    async def report(self, data: bytes) -> bytes | None:
        """The answer to one message, if any; GrpcError ends the stream."""
        ...

    async def recheck_periodically(self) -> None:
        """Work of the stream's own while it lasts, until cancelled (pushes through the
        callback it was opened with)."""
        ...

    def close(self) -> None:
        """The stream ended."""
        ...


# Opens a stream: its metadata, the peer (host:port) and a callback sending a message unasked.
OpenStream = Callable[[Metadata, str, Callable[[bytes], None]], StreamCall]

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
    streams: dict[str, OpenStream] = field(default_factory=dict)


def _error_trailers(status: int, message: str) -> Message:
    """The trailers ending a call that failed with gRPC `status` and `message`."""
    trailers = [(b"grpc-status", str(status).encode())]
    trailers.append((b"grpc-message", quote(message, safe=" ").encode()))
    return {"type": "http.response.trailers", "headers": trailers, "more_trailers": False}


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
        self._streams: dict[str, OpenStream] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = self._methods.get(scope["path"]) if scope["type"] == "http" else None
        if method is None:
            stream = self._streams.get(scope["path"]) if scope["type"] == "http" else None
            if stream is not None:
                await self._stream(scope, receive, send, stream)
            elif scope["type"] == "http":
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
        await send(_OK_TRAILERS if status == OK else _error_trailers(status, message))

    # -- bidirectional gRPC streams ---------------------------------------------------------

    async def _stream(
        self, scope: Scope, receive: Receive, send: Send, open_stream: OpenStream
    ) -> None:
        """Messages answered as they arrive and pushed unasked, through one outbox, while
        the request body is still open (pyvoy carries both directions at once)."""
        outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        host, port = scope.get("client") or ("", 0)
        call = open_stream(scope["headers"], f"{host}:{port}", outbox.put_nowait)
        reader = asyncio.ensure_future(self._read_messages(receive, call, outbox))
        recheck = asyncio.ensure_future(call.recheck_periodically())
        status, message = OK, ""
        await send(_GRPC_START)
        try:
            while (payload := await outbox.get()) is not None:
                await send(
                    {"type": "http.response.body", "body": frame(payload), "more_body": True}
                )
            await reader  # raises what ended the reading
        except GrpcError as exc:
            status, message = exc.status, str(exc)
        except Exception:
            log.exception("grpc_stream_failed", path=scope["path"])
            status, message = INTERNAL, "internal error"
        finally:
            recheck.cancel()
            reader.cancel()
            call.close()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        await send(_OK_TRAILERS if status == OK else _error_trailers(status, message))

    async def _read_messages(
        self, receive: Receive, call: StreamCall, outbox: asyncio.Queue[bytes | None]
    ) -> None:
        """Split the request body into gRPC messages (one may span chunks, a chunk hold
        several) and hand each to `call`; None into the outbox when the body ends."""
        buffered = b""
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                buffered += message.get("body", b"")
                while len(buffered) >= FRAME_PREFIX_BYTES:
                    if buffered[0] != 0:
                        raise GrpcError(UNIMPLEMENTED, "compressed messages are not supported")
                    size = int.from_bytes(buffered[1:FRAME_PREFIX_BYTES], "big")
                    if size > self._max_request_bytes:
                        raise GrpcError(
                            RESOURCE_EXHAUSTED,
                            f"message larger than {self._max_request_bytes} bytes",
                        )
                    end = FRAME_PREFIX_BYTES + size
                    if len(buffered) < end:
                        break
                    answer = await call.report(buffered[FRAME_PREFIX_BYTES:end])
                    buffered = buffered[end:]
                    if answer is not None:
                        outbox.put_nowait(answer)
                if not message.get("more_body", False):
                    if buffered:
                        raise GrpcError(INVALID_ARGUMENT, "the stream ended inside a message")
                    return
        finally:
            outbox.put_nowait(None)

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
                self._streams = endpoints.streams
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._stop()
                await send({"type": "lifespan.shutdown.complete"})
                return
