"""A grpc.aio RateLimitService that answers every call with the same OK response.

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
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

RESPONSE = rls_pb2.RateLimitResponse(
    overall_code=rls_pb2.RateLimitResponse.OK,
    statuses=[rls_pb2.RateLimitResponse.DescriptorStatus(code=rls_pb2.RateLimitResponse.OK)],
)


class ConstantServicer(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    """ShouldRateLimit: the request is decoded by grpc, then ignored."""

    async def ShouldRateLimit(  # noqa: N802 - the name is the RPC's
        self, request: rls_pb2.RateLimitRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> rls_pb2.RateLimitResponse:
        """Answer OK, whatever was asked."""
        return RESPONSE


async def serve(address: str, reuse_port: bool) -> None:
    """Serve on `address` until SIGTERM or SIGINT."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 1 << 20),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ]
    )
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(ConstantServicer(), server)
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
