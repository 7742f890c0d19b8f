"""One bucket, two doors: requests through the real Envoy (ext_authz -> ratelimitd) and requests
through the in-app ASGI middleware draw from the same counter in Redis, and are rejected with
the same answer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx

from ratelimitd.middleware import Limiter, RateLimitMiddleware
from ratelimitd.middleware.asgi import Receive, Scope, Send
from tests.conftest import RatelimitdFactory
from tests.envoy_process import Envoy
from tests.test_authz_e2e import start_envoy
from tests.test_middleware import Run

CONFIG = """
domain: edge
extract:
  - entries:
      - {key: tenant, header: x-tenant-id}
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 4, name: per_tenant}
"""
# What both doors must agree on (Envoy adds its own: date, server, ...).
RATE_LIMIT_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "content-type")


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello\n"})


def test_envoy_and_the_middleware_draw_from_one_counter_in_redis(
    ratelimitd: RatelimitdFactory,
    write_config: Callable[[str], Path],
    proxies: list[Envoy],
    tmp_path: Path,
    redis_url: str,
    run: Run,
) -> None:
    path = write_config(CONFIG)
    server = ratelimitd(path, "--over-limit-body", "problem-json", redis_url=redis_url)
    proxy = start_envoy(tmp_path, server.grpc_port, proxies)
    limiter = Limiter.from_config(path, "edge", redis_url)
    app = RateLimitMiddleware(hello, limiter)

    async def in_app() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            return await http.get("/", headers={"x-tenant-id": "t1"})

    remaining = []
    for door in ("envoy", "app", "envoy", "app"):
        if door == "envoy":
            reply = proxy.get("/", x_tenant_id="t1")
            assert reply.status == 200
            remaining += reply.header("x-ratelimit-remaining")
        else:
            local = run(in_app())
            assert local.status_code == 200
            remaining.append(local.headers["x-ratelimit-remaining"])
    assert remaining == ["3", "2", "1", "0"]  # one bucket of 4, counted down by both doors

    through_app = run(in_app())
    through_envoy = proxy.get("/", x_tenant_id="t1")
    assert (through_app.status_code, through_envoy.status) == (429, 429)
    for name in RATE_LIMIT_HEADERS:
        assert [through_app.headers[name]] == through_envoy.header(name), name
    assert (
        abs(int(through_app.headers["retry-after"]) - int(through_envoy.header("retry-after")[0]))
        <= 1
    )
    app_body, envoy_body = json.loads(through_app.content), json.loads(through_envoy.body)
    for body in (app_body, envoy_body):  # seconds may differ by one between the two answers
        for key in ("detail", "retry_after_seconds"):
            body.pop(key)
        body["limits"][0].pop("reset_seconds")
    assert app_body == envoy_body
    run(limiter.close())
