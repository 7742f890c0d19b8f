"""A FastAPI service limited in-process by ratelimitd.middleware (docs/middleware.md).

    RATELIMIT_REDIS_URL=redis://127.0.0.1:6379/0 uvicorn examples.fastapi_app.app:app

(without RATELIMIT_REDIS_URL the counters live in the process's memory). Then:

    curl -i -H 'x-tenant-id: acme' localhost:8000/hello
    curl -i -H 'x-tenant-id: acme' -H 'authorization: Bearer ann' 'localhost:8000/search?pages=30'
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Header, HTTPException

from ratelimitd.middleware import Limiter, RateLimitMiddleware, limit

limiter = Limiter.from_config(
    Path(__file__).with_name("ratelimit.yaml"), "api", os.environ.get("RATELIMIT_REDIS_URL")
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await limiter.close()


app = FastAPI(lifespan=lifespan)
# Every request: the domain's `extract:` rules build its descriptors (here, per tenant).
app.add_middleware(RateLimitMiddleware, limiter=limiter)


def current_user(authorization: str = Header("")) -> str:
    """Stands in for real authentication."""
    if not authorization.startswith("Bearer "):
        raise HTTPException(401, "sign in")
    return authorization.removeprefix("Bearer ")


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


@app.get("/search")
@limit(
    limiter,
    lambda user, **_: [{"user": user, "endpoint": "search"}],
    cost=lambda pages, **_: pages,
)
async def search(pages: int = 1, user: str = Depends(current_user)) -> dict[str, object]:
    """Limited per user (known only after authentication), each page a token."""
    return {"user": user, "pages": pages}


@app.post("/reports")
@limit(limiter, lambda tenant, **_: [{"reports": tenant}])
async def build_report(tenant: str = Header(alias="x-tenant-id")) -> dict[str, str]:
    """At most two reports in flight per tenant: the slot is held while this runs."""
    await asyncio.sleep(0.5)
    return {"report": "ready"}
