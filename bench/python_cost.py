"""The Python cost of one decision, in process: the asgi transport's app driven by a fake ASGI
host (receive and send return at once), against a redis-server of its own, on uvloop.

    .venv/bin/python bench/python_cost.py                      # this checkout
    .venv/bin/python bench/python_cost.py --root /tmp/old      # another checkout (a worktree)

What it measures is the CPU time of this one process per decision: decoding, matching,
batching, the Redis script call's share, the decision, metrics and encoding, without the
host (pyvoy's threads, Envoy's HTTP/2) that bench/run.py measures too. It moves far less
between runs on a noisy machine than a load test (the best of several rounds is reported),
so it tells whether a change to the request path pays, and it works on any commit whose asgi
app (`ratelimitd.app.asgi_worker:app`, before 2026-12-03 `ratelimitd.transports.asgi:app`) is
configured from RATELIMITD_* variables.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RLS_PATH = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
# As Envoy's rate limit filter sends them.
HEADERS = [
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
    (b"grpc-timeout", b"5S"),
    (b"user-agent", b"envoy/1.39.3"),
    (b"x-request-id", b"bench"),
]
CONCURRENCY = 128  # calls in flight, as bench/run.py's 16 connections x 8 streams

Message = MutableMapping[str, Any]


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=REPO, help="the checkout to measure")
    parser.add_argument(
        "--scenario", default="one", help="one, three or overlimit (bench/scenarios.py)"
    )
    parser.add_argument("--requests", type=int, default=20_000, help="per round")
    parser.add_argument("--rounds", type=int, default=7, help="the best round is reported")
    return parser.parse_args()


def framed(scenario: str) -> list[bytes]:
    """The scenario's requests as gRPC bodies (built with xds-protos, in a process of its
    own: the measured checkout's protos must not meet Envoy's in one process)."""
    code = (
        "from bench.scenarios import build, frame; "
        f"[print(frame(m).hex()) for m in build({scenario!r}).messages]"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return [bytes.fromhex(line) for line in out.split()]


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], int]:
    """A redis-server on a free port (chosen by the kernel for a socket bound and closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    argv = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
    process = subprocess.Popen([*argv, "--dir", directory], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        probe = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True)
        if probe.stdout.strip() == b"PONG":
            return process, port
        time.sleep(0.05)
    process.kill()
    raise SystemExit(f"redis-server on port {port} did not start")


async def measure(app: Any, bodies: list[bytes], requests: int, rounds: int) -> float:
    """The best round's CPU seconds per decision."""
    lifespan_in: asyncio.Queue[Message] = asyncio.Queue()
    lifespan_out: asyncio.Queue[Message] = asyncio.Queue()
    await lifespan_in.put({"type": "lifespan.startup"})
    lifespan = asyncio.ensure_future(app({"type": "lifespan"}, lifespan_in.get, lifespan_out.put))
    started = await lifespan_out.get()
    if started["type"] != "lifespan.startup.complete":
        raise SystemExit(f"the app did not start: {started}")
    failures = 0

    async def send(message: Message) -> None:
        nonlocal failures
        if message["type"] == "http.response.trailers" and message["headers"][0][1] != b"0":
            failures += 1

    def call(body: bytes) -> Awaitable[None]:
        message = {"type": "http.request", "body": body, "more_body": False}

        async def receive() -> Message:
            return message

        scope = {"type": "http", "path": RLS_PATH, "method": "POST", "headers": HEADERS}
        result: Awaitable[None] = app(scope, receive, send)
        return result

    async def client(n: int, offset: int) -> None:
        for i in range(n):
            await call(bodies[(offset + i) % len(bodies)])

    async def load(total: int) -> None:
        each = total // CONCURRENCY
        await asyncio.gather(*(client(each, k * each) for k in range(CONCURRENCY)))

    await load(CONCURRENCY * 100)  # warm: plans cached, connection open
    best = float("inf")
    for _ in range(rounds):
        cpu = time.process_time()
        await load(requests)
        best = min(best, (time.process_time() - cpu) / (requests // CONCURRENCY * CONCURRENCY))
    await lifespan_in.put({"type": "lifespan.shutdown"})
    await lifespan_out.get()
    await lifespan
    if failures:
        raise SystemExit(f"{failures} calls failed: the measurement is not of decisions")
    return best


def main() -> None:
    """Measure and print the best round."""
    args = parse_args()
    bodies = framed(args.scenario)
    with tempfile.TemporaryDirectory() as directory:
        redis, port = start_redis(directory)
        try:
            sys.path.insert(0, str(args.root))
            os.environ |= {
                "RATELIMITD_CONFIG": str(REPO / "bench" / "config" / "bench.yaml"),
                "RATELIMITD_REDIS_URL": f"redis://127.0.0.1:{port}/0",
                "RATELIMITD_HTTP_ADDR": "127.0.0.1:0",
                "RATELIMITD_LOG_LEVEL": "warning",
            }
            import uvloop

            try:
                from ratelimitd.app.asgi_worker import app
            except ImportError:  # a checkout from before the app package
                from ratelimitd.transports.asgi import app  # type: ignore[attr-defined,no-redef]

            run: Callable[..., float] = uvloop.run
            cost = run(measure(app, bodies, args.requests, args.rounds))
        finally:
            redis.terminate()
            redis.wait()
    source = Path(sys.modules["ratelimitd"].__file__ or "").parent
    commit = subprocess.run(
        ["git", "-C", str(source), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(
        f"{args.scenario}: {cost * 1e6:.1f} us of CPU per decision "
        f"(ratelimitd {commit or '?'} at {source}; best of {args.rounds} rounds of "
        f"{args.requests:,}, {CONCURRENCY} in flight)"
    )


if __name__ == "__main__":
    main()
