"""An ASGI app answering gRPC unary calls over HTTP/2 with the same OK response every time.

The baseline of the `asgi` transport, run under pyvoy (Envoy-hosted Python):

    .venv/bin/pyvoy bench.constant_asgi:app --address 127.0.0.1 --port PORT

(with the repository root on PYTHONPATH). For every POST it reads the whole body, decodes
the length-prefixed RateLimitRequest (as ratelimitd's transport must), and answers `200`,
`content-type: application/grpc`, one length-prefixed RateLimitResponse with overall_code
OK, and a `grpc-status: 0` trailer through the ASGI `http.response.trailers` extension.
ext_authz `Check` calls (the `check` scenario) the same way: the CheckRequest decoded, a fixed
allowed CheckResponse (status.code 0) answered. `GET /healthcheck` answers 200, like
ratelimitd's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from envoy.service.auth.v3 import external_auth_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
from google.rpc import status_pb2

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

RLS_PATH = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
_MESSAGE = rls_pb2.RateLimitResponse(
    overall_code=rls_pb2.RateLimitResponse.OK,
    statuses=[rls_pb2.RateLimitResponse.DescriptorStatus(code=rls_pb2.RateLimitResponse.OK)],
).SerializeToString()
RESPONSE_BODY = b"\x00" + len(_MESSAGE).to_bytes(4, "big") + _MESSAGE
CHECK_PATH = "/envoy.service.auth.v3.Authorization/Check"
_CHECK = external_auth_pb2.CheckResponse(
    status=status_pb2.Status(code=0), ok_response=external_auth_pb2.OkHttpResponse()
).SerializeToString()
CHECK_BODY = b"\x00" + len(_CHECK).to_bytes(4, "big") + _CHECK
# Per method: the request type to decode, and the framed answer.
METHODS: dict[str, tuple[type[ProtoMessage], bytes]] = {
    RLS_PATH: (rls_pb2.RateLimitRequest, RESPONSE_BODY),
    CHECK_PATH: (external_auth_pb2.CheckRequest, CHECK_BODY),
}
_GRPC_HEADERS = [(b"content-type", b"application/grpc")]


async def _read_body(receive: Receive) -> bytes:
    """The whole request body."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b""
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _grpc_answer(send: Send, body: bytes, status: int, message: str = "") -> None:
    """Send a gRPC response: headers, `body` (may be empty), then the status trailers."""
    await send(
        {"type": "http.response.start", "status": 200, "headers": _GRPC_HEADERS, "trailers": True}
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
    trailers = [(b"grpc-status", str(status).encode())]
    if message:
        trailers.append((b"grpc-message", message.encode()))
    await send({"type": "http.response.trailers", "headers": trailers, "more_trailers": False})


async def _lifespan(receive: Receive, send: Send) -> None:
    """Accept startup and shutdown: there is nothing to set up."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI application."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    if scope["method"] == "GET" and scope["path"] == "/healthcheck":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"OK"})
        return
    body = await _read_body(receive)
    method = METHODS.get(scope["path"]) if scope["method"] == "POST" else None
    if method is None:
        await _grpc_answer(send, b"", 12, f"unknown method {scope['path']}")  # UNIMPLEMENTED
        return
    request_type, answer = method
    if len(body) < 5 or body[0] != 0 or int.from_bytes(body[1:5], "big") != len(body) - 5:
        await _grpc_answer(send, b"", 13, "bad gRPC framing")  # INTERNAL
        return
    try:
        request_type.FromString(body[5:])  # decoded and dropped, as a server must
    except DecodeError:
        await _grpc_answer(send, b"", 13, f"cannot decode {request_type.__name__}")  # INTERNAL
        return
    await _grpc_answer(send, answer, 0)
