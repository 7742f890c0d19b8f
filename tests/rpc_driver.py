"""Drives `transports.rpc.Rpc` bytes in, bytes out: the engine on the in-memory store with a
fake clock, no server and no network. Run by tests/test_rpc_bytes.py in a child process,
because ratelimitd's generated protobuf code (which rpc.py loads) cannot share a process with
xds-protos, which the tests use to build and read the messages.

    python -m tests.rpc_driver --config PATH [any `serve` flag]

Reads one JSON object per line: {"call": "rls" | "check" | "health", "data": <hex>,
"advance_s": <seconds to move the clock first>}. Writes one per line: {"data": <hex>} for an
answer, {"status": <gRPC code>, "message": <text>} for a refusal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import TextIO

from ratelimitd.app.build import build_engine, load
from ratelimitd.app.settings import add_serve_arguments, settings_from
from ratelimitd.storage.clock import FakeClock
from ratelimitd.storage.memory import MemoryStore
from ratelimitd.transports.grpc_status import GrpcError
from ratelimitd.transports.health import Readiness
from ratelimitd.transports.rpc import Rpc


async def serve_lines(rpc: Rpc, clock: FakeClock, answers: TextIO) -> None:
    """Answer each line of standard input with one line on `answers`."""
    calls = {"rls": rpc.should_rate_limit, "check": rpc.check, "health": rpc.health_check}
    for line in sys.stdin:
        asked = json.loads(line)
        clock.advance(asked.get("advance_s", 0.0))
        answer: dict[str, object]
        try:
            answer = {"data": (await calls[asked["call"]](bytes.fromhex(asked["data"]))).hex()}
        except GrpcError as exc:
            answer = {"status": exc.status, "message": str(exc)}
        print(json.dumps(answer), file=answers, flush=True)


def main() -> None:
    """Build the engine the flags describe and answer calls until standard input ends."""
    # Answers go to the real standard output; anything else written there (logs) to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    parser = argparse.ArgumentParser(prog="rpc_driver")
    add_serve_arguments(parser, os.environ)
    settings = settings_from(parser.parse_args(), os.environ)
    config = load(settings)
    if config is None:
        raise SystemExit("invalid config")
    clock = FakeClock()
    engine = build_engine(settings, config, MemoryStore(clock))
    rpc = Rpc(
        engine,
        Readiness(serving=True),
        settings.authz_domain,
        dynamic_metadata=settings.response_dynamic_metadata,
    )
    asyncio.run(serve_lines(rpc, clock, answers))


if __name__ == "__main__":
    main()
