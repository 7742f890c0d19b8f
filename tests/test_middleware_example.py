"""examples/fastapi_app works as its docstring says: per tenant from the extract rules, per
user with a cost from the view, and a concurrency limit on one view (memory store)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Coroutine
from typing import Any

import httpx

Run = Callable[[Coroutine[Any, Any, Any]], Any]


def test_the_fastapi_example_limits_tenants_users_and_reports_in_flight(run: Run) -> None:
    example = importlib.import_module("examples.fastapi_app.app")
    limiter = example.limiter
    tenant = {"x-tenant-id": "acme"}
    signed_in = tenant | {"authorization": "Bearer ann"}

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=example.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            hello = await http.get("/hello", headers=tenant)
            assert hello.status_code == 200
            assert hello.headers["x-ratelimit-remaining"] == "19"
            pages = [await http.get("/search?pages=30", headers=signed_in) for _ in range(2)]
            assert [r.status_code for r in pages] == [200, 429]
            # The tenant's bucket (18 left of 20) is tighter than the search pages' (20 of 50).
            assert pages[0].headers["x-ratelimit-remaining"] == "18"
            assert pages[0].headers["x-ratelimit-limit"].startswith("20, ")
            # Two reports being built (their slots held here): a third must wait.
            held = [await limiter.admit(limiter.request([{"reports": "acme"}])) for _ in range(2)]
            assert all(admission.admitted for admission in held)
            refused = await http.post("/reports", headers=tenant)
            assert refused.status_code == 429
            assert refused.json()["limits"] == [{"name": "reports_in_flight", "concurrency": 2}]
            await held[0].end()
            assert (await http.post("/reports", headers=tenant)).json() == {"report": "ready"}
            await held[1].end()

    run(scenario())
