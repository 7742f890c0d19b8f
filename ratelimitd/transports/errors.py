"""Which exception ends a call with which gRPC status: the one table every transport (and
the admin endpoints' counting) goes by."""

from __future__ import annotations

import asyncio

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from ratelimitd.model.messages import InvalidRequestError, StoreUnavailableError
from ratelimitd.transports.grpc_status import (
    CANCELLED,
    INTERNAL,
    INVALID_ARGUMENT,
    UNAVAILABLE,
    GrpcError,
)

# Anything else is a bug, answered INTERNAL.
_ERROR_STATUSES: tuple[tuple[type[BaseException], int], ...] = (
    (InvalidRequestError, INVALID_ARGUMENT),
    (DecodeError, INVALID_ARGUMENT),
    (json_format.ParseError, INVALID_ARGUMENT),
    (StoreUnavailableError, UNAVAILABLE),
    # The client went away (a deadline, a cancelled stream) before the answer was ready.
    (asyncio.CancelledError, CANCELLED),
)


def error_status(exc: BaseException) -> int:
    """The gRPC status of a call that ended with `exc`."""
    if isinstance(exc, GrpcError):
        return exc.status
    for kind, status in _ERROR_STATUSES:
        if isinstance(exc, kind):
            return status
    return INTERNAL
