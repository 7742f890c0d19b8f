"""A grpc.aio RateLimitService (and ext_authz Authorization) answering every call with the
same OK response.

The baseline of the `grpc` transport: the same server library, message decoding and encoding
as ratelimitd's gRPC transport, with no decision at all. Run as

    .venv/bin/python -m bench.constant_grpc --address 127.0.0.1:PORT [--reuse-port]

`--reuse-port` lets several processes share the port (one per worker, as ratelimitd's
`--workers` does). It stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.rpc import status_pb2

RESPONSE = rls_pb2.RateLimitResponse(
    overall_code=rls_pb2.RateLimitResponse.OK,
    statuses=[rls_pb2.RateLimitResponse.DescriptorStatus(code=rls_pb2.RateLimitResponse.OK)],
)

# ext_authz Check (the `check` scenario): allowed, nothing added to the request.
CHECK_RESPONSE = external_auth_pb2.CheckResponse(
    status=status_pb2.Status(code=0), ok_response=external_auth_pb2.OkHttpResponse()
)


class ConstantServicer(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    """ShouldRateLimit: the request is decoded by grpc, then ignored."""

    async def ShouldRateLimit(  # noqa: N802 - the name is the RPC's
        self, request: rls_pb2.RateLimitRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> rls_pb2.RateLimitResponse:
        """Answer OK, whatever was asked."""
        return RESPONSE


class ConstantAuthorization(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """Check: the request is decoded by grpc, then ignored."""

    async def Check(  # noqa: N802 - the name is the RPC's
        self,
        request: external_auth_pb2.CheckRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> external_auth_pb2.CheckResponse:
        """Allow, whatever was asked."""
        return CHECK_RESPONSE


async def serve(address: str, reuse_port: bool) -> None:
    """Serve on `address` until SIGTERM or SIGINT."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 1 << 20),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ]
    )
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(ConstantServicer(), server)
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(ConstantAuthorization(), server)
    server.add_insecure_port(address)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="HOST:PORT to listen on")
    parser.add_argument("--reuse-port", action="store_true", help="set SO_REUSEPORT")
    args = parser.parse_args()
    asyncio.run(serve(args.address, args.reuse_port))


if __name__ == "__main__":
    main()
