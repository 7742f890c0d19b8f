"""A worker holding a concurrency slot until it is killed: a request through the ASGI
middleware whose app never finishes. `python -m tests.slot_holder CONFIG REDIS_URL LEASE_S`
prints `holding` once the app runs (its slot taken), then waits forever.

tests/test_concurrency_limits.py SIGKILLs it and watches the slot come back after its lease."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from ratelimitd.middleware import Limiter, RateLimitMiddleware


async def hold(config: str, redis_url: str, lease_s: float) -> None:
    limiter = Limiter.from_config(config, "app", redis_url, lease_s=lease_s)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        print("holding", flush=True)
        await asyncio.Event().wait()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        raise AssertionError(f"the holder answered: {message}")

    middleware = RateLimitMiddleware(app, limiter)
    headers = [(b"x-tenant-id", b"t1")]
    await middleware(
        {"type": "http", "method": "GET", "path": "/", "headers": headers}, receive, send
    )


if __name__ == "__main__":
    asyncio.run(hold(sys.argv[1], sys.argv[2], float(sys.argv[3])))
