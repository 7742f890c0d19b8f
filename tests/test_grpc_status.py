"""gRPC framing details the ASGI transport implements itself."""

from __future__ import annotations

import pytest

from ratelimitd.transports.grpc_status import (
    INVALID_ARGUMENT,
    UNIMPLEMENTED,
    GrpcError,
    frame,
    parse_timeout,
    unframe,
)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(b"1H", 3600.0), (b"2M", 120.0), (b"3S", 3.0), (b"250m", 0.25), (b"7u", 7e-6), (b"9n", 9e-9)],
)
def test_grpc_timeout_units(value: bytes, seconds: float) -> None:
    assert parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [b"", b"10", b"123456789S", b"1s", b"-1S", b"1.5S"])
def test_malformed_grpc_timeout(value: bytes) -> None:
    with pytest.raises(GrpcError) as caught:
        parse_timeout(value)
    assert caught.value.status == INVALID_ARGUMENT


def test_frame_round_trip() -> None:
    assert frame(b"abc") == b"\x00\x00\x00\x00\x03abc"
    assert unframe(frame(b"abc")) == b"abc"
    assert unframe(frame(b"")) == b""


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"\x00\x00\x00", INVALID_ARGUMENT),
        (b"\x01\x00\x00\x00\x01x", UNIMPLEMENTED),
        (b"\x00\x00\x00\x00\x05abc", INVALID_ARGUMENT),
        (frame(b"a") + frame(b"b"), INVALID_ARGUMENT),
    ],
)
def test_unframe_refuses(body: bytes, status: int) -> None:
    with pytest.raises(GrpcError) as caught:
        unframe(body)
    assert caught.value.status == status
