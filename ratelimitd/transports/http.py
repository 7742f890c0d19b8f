"""The HTTP endpoints (readiness today; more admin endpoints join the route table later),
served by a small HTTP/1.1 server on asyncio streams.

The routes are plain async functions of (method, path, body) so that other transports can
serve the same endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import structlog

log = structlog.get_logger(__name__)

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 1 << 20
IDLE_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Response:
    """An HTTP response: status, body and content type."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = field(default=())


Handler = Callable[[bytes], Awaitable[Response]]


def text(status: int, message: str) -> Response:
    """A plain-text response ending in a newline."""
    return Response(status, (message + "\n").encode())


class Routes:
    """Maps (method, path) to handlers; answers 404 and 405 itself."""

    def __init__(self) -> None:
        self._handlers: dict[str, dict[str, Handler]] = {}

    def add(self, method: str, path: str, handler: Handler) -> None:
        """Serve `handler` for `method` requests to `path`."""
        self._handlers.setdefault(path, {})[method] = handler

    async def dispatch(self, method: str, target: str, body: bytes) -> Response:
        """Answer one request."""
        path = target.split("?", 1)[0]
        by_method = self._handlers.get(path)
        if by_method is None:
            return text(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
        handler = by_method.get(method)
        if handler is None:
            allowed = ", ".join(sorted(by_method))
            return Response(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"{method} is not allowed here; use {allowed}\n".encode(),
                headers=(("Allow", allowed),),
            )
        return await handler(body)


class HttpServer:
    """HTTP/1.1 with keep-alive and Content-Length bodies; enough for admin and probes."""

    def __init__(self, routes: Routes, host: str, port: int) -> None:
        self._routes = routes
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        """The bound port (useful when asked for port 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and start accepting connections."""
        # reuse_port: every worker process binds the same address.
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=MAX_HEADER_BYTES, reuse_port=True
        )

    async def stop(self) -> None:
        """Stop accepting and close open connections."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._connections):
                writer.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; return whether the connection stays open."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            await self._send(
                writer, text(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "headers too large"), False
            )
            return False
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await self._send(writer, text(HTTPStatus.BAD_REQUEST, "malformed request line"), False)
            return False
        method, target, version = parts
        fields: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                fields[name.strip().lower()] = value.strip()
        keep_alive = fields.get("connection", "").lower() != "close" and version == "HTTP/1.1"
        try:
            length = int(fields.get("content-length", "0"))
        except ValueError:
            length = -1
        if length < 0 or "transfer-encoding" in fields:
            await self._send(
                writer, text(HTTPStatus.BAD_REQUEST, "send a Content-Length body"), False
            )
            return False
        if length > MAX_BODY_BYTES:
            await self._send(
                writer, text(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large"), False
            )
            return False
        body = await reader.readexactly(length) if length else b""
        try:
            response = await self._routes.dispatch(method, target, body)
        except Exception:
            log.exception("http_handler_failed", method=method, path=target)
            response = text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")
        await self._send(writer, response, keep_alive)
        return keep_alive

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, response: Response, keep_alive: bool) -> None:
        reason = HTTPStatus(response.status).phrase
        header_lines = [
            f"HTTP/1.1 {response.status} {reason}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
            *(f"{k}: {v}" for k, v in response.headers),
        ]
        writer.write(("\r\n".join(header_lines) + "\r\n\r\n").encode("latin-1") + response.body)
        await writer.drain()
