"""gRPC status codes and the wire details shared by transports that frame gRPC themselves
(no protobuf here: settings import it, and tests import it beside Envoy's own generated
code)."""

from __future__ import annotations

import re

# grpc/doc/statuscodes.md
OK = 0
CANCELLED = 1
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
NOT_FOUND = 5
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14

# Requests larger than this are refused before decoding (--max-request-bytes).
MAX_MESSAGE_BYTES = 1 << 20
# A gRPC message on the wire: a compressed flag byte and a 4-byte length, then the message.
FRAME_PREFIX_BYTES = 5

_TIMEOUT = re.compile(rb"(\d{1,8})([HMSmun])")
_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


# The names metrics count calls by.
NAMES = {
    OK: "OK",
    CANCELLED: "CANCELLED",
    INVALID_ARGUMENT: "INVALID_ARGUMENT",
    DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED",
    NOT_FOUND: "NOT_FOUND",
    RESOURCE_EXHAUSTED: "RESOURCE_EXHAUSTED",
    UNIMPLEMENTED: "UNIMPLEMENTED",
    INTERNAL: "INTERNAL",
    UNAVAILABLE: "UNAVAILABLE",
}


class GrpcError(Exception):
    """Ends a call with a gRPC status other than OK."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_timeout(value: bytes) -> float:
    """Seconds from a grpc-timeout header value such as b"250m"."""
    match = _TIMEOUT.fullmatch(value)
    if match is None:
        raise GrpcError(INVALID_ARGUMENT, f"malformed grpc-timeout: {value.decode('latin-1')!r}")
    return int(match[1]) * _TIMEOUT_UNITS[match[2]]


def frame(payload: bytes) -> bytes:
    """One uncompressed length-prefixed gRPC message."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def unframe(body: bytes) -> bytes:
    """The single message of a unary request body."""
    if len(body) < FRAME_PREFIX_BYTES:
        raise GrpcError(INVALID_ARGUMENT, "request body is not a gRPC message")
    if body[0] != 0:
        raise GrpcError(UNIMPLEMENTED, "compressed messages are not supported")
    if int.from_bytes(body[1:FRAME_PREFIX_BYTES], "big") != len(body) - FRAME_PREFIX_BYTES:
        raise GrpcError(INVALID_ARGUMENT, "request must hold exactly one gRPC message")
    return body[FRAME_PREFIX_BYTES:]
