"""Ask a running ratelimitd what Envoy would ask it, and print the answer as JSON.

    .venv/bin/python examples/client.py --descriptor tenant=t1,route=/v1/search
    .venv/bin/python examples/client.py --domain example --hits 3 --descriptor tenant=t1

One ShouldRateLimit call: each --descriptor is one descriptor (Envoy sends one per
`rate_limits` action list), its entries comma-separated in order; --hits N makes it one
request costing N. The same flags as `ratelimitd explain` and `ratelimitd simulate`.
"""

from __future__ import annotations

import argparse

import grpc
from google.protobuf import json_format

from ratelimitd.protos.envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from ratelimitd.protos.envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from ratelimitd.tools.request_flags import add_request_flags


def main() -> None:
    """Send the request the flags describe and print the response."""
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exits 0 with the answer (OK or OVER_LIMIT alike), 1 if the call failed.",
    )
    parser.add_argument(
        "--addr",
        default="127.0.0.1:8081",
        metavar="HOST:PORT",
        help="ratelimitd's gRPC address (default %(default)s, where `make run` listens)",
    )
    parser.add_argument(
        "--domain", default="example", help="the request's domain (default %(default)s)"
    )
    add_request_flags(parser, "the request", required=True)
    args = parser.parse_args()
    request = rls_pb2.RateLimitRequest(
        domain=args.domain,
        descriptors=[
            ratelimit_pb2.RateLimitDescriptor(
                entries=[
                    ratelimit_pb2.RateLimitDescriptor.Entry(key=key, value=value)
                    for key, value in descriptor.entries
                ]
            )
            for descriptor in args.descriptor
        ],
        hits_addend=args.hits,
    )
    with grpc.insecure_channel(args.addr) as channel:
        try:
            response = rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(
                request, timeout=5
            )
        except grpc.RpcError as exc:
            raise SystemExit(f"{args.addr}: {exc.code().name}: {exc.details()}") from None
    print(json_format.MessageToJson(response, indent=2))


if __name__ == "__main__":
    main()
