"""Ask a running ratelimitd what Envoy would ask it, and print the answer.

    .venv/bin/python examples/client.py tenant=acme route=/v1/search
    .venv/bin/python examples/client.py --domain example --hits 3 tenant=acme

Each KEY=VALUE is one entry of a single descriptor; envoy sends one descriptor per
`rate_limits` action list.
"""

from __future__ import annotations

import argparse

import grpc
from google.protobuf import json_format

from ratelimitd.protos.envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from ratelimitd.protos.envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("entries", nargs="+", metavar="KEY=VALUE")
    parser.add_argument("--addr", default="127.0.0.1:8081")
    parser.add_argument("--domain", default="example")
    parser.add_argument("--hits", type=int, default=0, help="hits_addend (0 means 1)")
    args = parser.parse_args()
    entries = [
        ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v)
        for k, _, v in (e.partition("=") for e in args.entries)
    ]
    request = rls_pb2.RateLimitRequest(
        domain=args.domain,
        descriptors=[ratelimit_pb2.RateLimitDescriptor(entries=entries)],
        hits_addend=args.hits,
    )
    with grpc.insecure_channel(args.addr) as channel:
        response = rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(request, timeout=5)
    print(json_format.MessageToJson(response, indent=2))


if __name__ == "__main__":
    main()
