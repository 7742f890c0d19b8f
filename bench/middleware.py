"""What the in-app middleware adds to a request, in process: the same tiny app driven by a fake
host (receive and send return at once), bare and behind ratelimitd.middleware on the memory
store and on a redis-server of its own, in one run.

    .venv/bin/python bench/middleware.py
    .venv/bin/python bench/middleware.py --requests 5000 --rounds 5

Per variant, best of the rounds:
- latency: requests one at a time, the median wall time of one (what a client waits; on
  Redis it includes the round trip on loopback);
- CPU: 64 requests in flight, this process's CPU time per request (on Redis, requests of one
  loop turn share a round trip, as in the sidecar).
The ASGI variants run on uvloop, the WSGI ones call the app from one thread (the limiter's
coroutines run on its own loop thread: the hop is part of what is measured). Every admitted
response is checked to carry the rate limit headers, so a variant that limits nothing, or
that fails open (Redis is given 1 s, not the default 50 ms, for a loaded machine), fails.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any

import uvloop

if __package__ in (None, ""):
    # Run as a script (bench/middleware.py): make `bench` importable from the repository root.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.python_cost import start_redis
from ratelimitd.middleware import Limiter, RateLimitMiddleware, WSGIRateLimitMiddleware

CONFIG = """
domain: bench
extract:
  - entries:
      - {key: tenant, header: x-tenant-id}
descriptors:
  - key: tenant
    rate_limit: {unit: second, requests_per_unit: 1000000000, name: per_tenant}
"""
TENANTS = 100
IN_FLIGHT = 64

Message = MutableMapping[str, Any]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000, help="per round")
    parser.add_argument("--rounds", type=int, default=5, help="the best round is reported")
    return parser.parse_args()


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]})
    await send({"type": "http.response.body", "body": b"ok"})


def wsgi_app(environ: Any, start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("X-App", "1")])
    return [b"ok"]


def scopes() -> list[Message]:
    return [
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "query_string": b"",
            "headers": [(b"x-tenant-id", f"t{n}".encode())],
        }
        for n in range(TENANTS)
    ]


async def measure_asgi(app: Any, limited: bool, requests: int, rounds: int) -> tuple[float, float]:
    """(median latency s, CPU s per request) of the best rounds."""
    unlimited = 0

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal unlimited
        if message["type"] == "http.response.start" and limited:
            names = [name for name, _ in message["headers"]]
            unlimited += b"x-ratelimit-remaining" not in names

    all_scopes = scopes()

    async def one_at_a_time(n: int) -> float:
        times = []
        for i in range(n):
            started = time.perf_counter()
            await app(all_scopes[i % TENANTS], receive, send)
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    async def client(n: int, offset: int) -> None:
        for i in range(n):
            await app(all_scopes[(offset + i) % TENANTS], receive, send)

    async def in_flight(n: int) -> float:
        each = n // IN_FLIGHT
        cpu = time.process_time()
        await asyncio.gather(*(client(each, k) for k in range(IN_FLIGHT)))
        return (time.process_time() - cpu) / (each * IN_FLIGHT)

    await in_flight(IN_FLIGHT * 50)  # warm: plans and keys cached, connection open
    latency = min([await one_at_a_time(requests // 5) for _ in range(rounds)])
    cpu = min([await in_flight(requests) for _ in range(rounds)])
    if unlimited:
        raise SystemExit(f"{unlimited} responses without rate limit headers")
    return latency, cpu


def measure_wsgi(app: Any, limited: bool, requests: int, rounds: int) -> tuple[float, float]:
    """(median latency s, CPU s per request), one request at a time from this thread."""
    unlimited = 0

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        nonlocal unlimited
        if limited:
            unlimited += "X-RateLimit-Remaining" not in [name for name, _ in headers]
        return lambda data: None

    environs = [
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTP_X_TENANT_ID": f"t{n}"}
        for n in range(TENANTS)
    ]

    def call(environ: dict[str, Any]) -> None:
        body = app(environ, start_response)
        list(body)
        close: Callable[[], None] | None = getattr(body, "close", None)
        if close is not None:
            close()

    def one_round(n: int) -> tuple[float, float]:
        times = []
        cpu = time.process_time()
        for i in range(n):
            started = time.perf_counter()
            call(environs[i % TENANTS])
            times.append(time.perf_counter() - started)
        return statistics.median(times), (time.process_time() - cpu) / n

    one_round(1000)
    results = [one_round(requests // 5) for _ in range(rounds)]
    if unlimited:
        raise SystemExit(f"{unlimited} responses without rate limit headers")
    return min(r[0] for r in results), min(r[1] for r in results)


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "bench.yaml"
        config.write_text(CONFIG)
        redis, port = start_redis(directory)
        url = f"redis://127.0.0.1:{port}/0"
        rows: list[tuple[str, str, float, float]] = []
        try:

            async def asgi_rows() -> None:
                for store, store_url in (("none", None), ("memory", None), ("redis", url)):
                    if store == "none":
                        app: Any = asgi_app
                    else:
                        limiter = Limiter.from_config(config, "bench", store_url, redis_timeout=1.0)
                        app = RateLimitMiddleware(asgi_app, limiter)
                    latency, cpu = await measure_asgi(
                        app, store != "none", args.requests, args.rounds
                    )
                    rows.append(("asgi", store, latency, cpu))
                    if store != "none":
                        await limiter.close()

            uvloop.run(asgi_rows())
            for store, store_url in (("none", None), ("memory", None), ("redis", url)):
                wsgi: Any = wsgi_app
                if store != "none":
                    limiter = Limiter.from_config(config, "bench", store_url, redis_timeout=1.0)
                    wsgi = WSGIRateLimitMiddleware(wsgi_app, limiter)
                latency, cpu = measure_wsgi(wsgi, store != "none", args.requests, args.rounds)
                rows.append(("wsgi", store, latency, cpu))
                if store != "none":
                    limiter.close_sync()
        finally:
            redis.terminate()
            redis.wait()
    print("| door | store | latency p50 us | added us | CPU us/request | added us | x bare |")
    print("|---|---|---|---|---|---|---|")
    bare: dict[str, tuple[float, float]] = {}
    for door, store, latency, cpu in rows:
        if store == "none":
            bare[door] = (latency, cpu)
        base_latency, base_cpu = bare[door]
        print(
            f"| {door} | {store} | {latency * 1e6:.1f} | {(latency - base_latency) * 1e6:.1f} "
            f"| {cpu * 1e6:.1f} | {(cpu - base_cpu) * 1e6:.1f} | {cpu / base_cpu:.1f} |"
        )


if __name__ == "__main__":
    main()
