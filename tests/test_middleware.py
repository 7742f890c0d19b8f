"""ratelimitd.middleware through real apps: Starlette and FastAPI driven by httpx's ASGI
transport, Flask by its test client; on the memory store and on a real Redis. Limits, the
headers of admitted and rejected responses, the 429's problem+json body, failure modes and the
per-view decorator."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Annotated, Any

import flask
import httpx
import pytest
from fastapi import Depends, FastAPI, Header
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from ratelimitd.config.errors import InvalidConfigError
from ratelimitd.core.headers import HeaderMode
from ratelimitd.middleware import (
    Limiter,
    RateLimitMiddleware,
    WSGIRateLimitMiddleware,
    depends,
    limit,
)
from ratelimitd.middleware.asgi import Scope
from ratelimitd.middleware.exchange import Exchange
from ratelimitd.middleware.wsgi import Environ
from tests.conftest import free_port

Run = Callable[[Coroutine[Any, Any, Any]], Any]

CONFIG = """
domain: app
extract:
  - entries:
      - {key: tenant, header: x-tenant-id}
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 3, name: per_tenant}
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 2, name: per_user}
  - key: search
    rate_limit: {unit: minute, requests_per_unit: 10, name: search_pages}
"""


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    """No URL (the memory store), then the session's Redis, emptied."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
def limiter(
    write_config: Callable[[str], Path], store_url: str | None, run: Run
) -> Iterator[Limiter]:
    built = Limiter.from_config(write_config(CONFIG), "app", store_url)
    yield built
    run(built.close())


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")


def gets(run: Run, app: Any, count: int, path: str = "/", **headers: str) -> list[httpx.Response]:
    """`count` GETs of `path`, one after the other, with `headers` (x_user: x-user)."""
    fields = {name.replace("_", "-"): value for name, value in headers.items()}

    async def send() -> list[httpx.Response]:
        async with client(app) as http:
            return [await http.get(path, headers=fields) for _ in range(count)]

    replies: list[httpx.Response] = run(send())
    return replies


def starlette_app(calls: list[str]) -> Starlette:
    async def hello(request: StarletteRequest) -> PlainTextResponse:
        calls.append(request.url.path)
        return PlainTextResponse("hello")

    return Starlette(routes=[Route("/", hello)])


def test_extract_rules_limit_a_starlette_app_with_the_sidecars_answers(
    limiter: Limiter, run: Run
) -> None:
    calls: list[str] = []
    app = starlette_app(calls)
    app.add_middleware(RateLimitMiddleware, limiter=limiter)
    replies = gets(run, app, 4, x_tenant_id="t1")
    assert [r.status_code for r in replies] == [200, 200, 200, 429]
    assert len(calls) == 3  # the rejected request never reached the app
    assert replies[0].text == "hello"
    assert [r.headers["x-ratelimit-remaining"] for r in replies] == ["2", "1", "0", "0"]
    assert replies[0].headers["x-ratelimit-limit"] == '3, 3;w=60;name="per_tenant"'
    limited = replies[3]
    assert limited.headers["retry-after"] in {"19", "20"}  # 1 of 3 a minute refills in 20 s
    assert limited.headers["content-type"] == "application/problem+json"
    body = json.loads(limited.content)
    assert (body["status"], body["fired_limit"]) == (429, "per_tenant")
    assert body["limits"][0] | {"reset_seconds": 0} == {
        "name": "per_tenant",
        "requests_per_unit": 3,
        "unit": "minute",
        "remaining": 0,
        "reset_seconds": 0,
    }
    # Another tenant has its own bucket; a request the rules build no descriptor for has none.
    assert gets(run, app, 1, x_tenant_id="t2")[0].status_code == 200
    anonymous = gets(run, app, 1)[0]
    assert anonymous.status_code == 200
    assert "x-ratelimit-remaining" not in anonymous.headers


def test_the_applications_descriptors_and_cost_limit_a_fastapi_app(
    limiter: Limiter, run: Run
) -> None:
    """A callable on the ASGI scope gives the descriptors (here a header an auth layer set)
    and the cost."""
    app = FastAPI()

    @app.get("/")
    async def root() -> dict[str, str]:
        return {"ok": "yes"}

    def by_user(scope: Scope) -> list[dict[str, str]]:
        user = dict(scope["headers"]).get(b"x-user")
        return [{"user": user.decode()}] if user else []

    app.add_middleware(RateLimitMiddleware, limiter=limiter, descriptors=by_user)
    replies = gets(run, app, 3, x_user="ann")
    assert [r.status_code for r in replies] == [200, 200, 429]
    assert replies[0].json() == {"ok": "yes"}
    assert json.loads(replies[2].content)["fired_limit"] == "per_user"

    async def expensive(scope: Scope) -> list[dict[str, str]]:
        return [{"user": "bob"}]

    costly = FastAPI()
    costly.add_middleware(
        RateLimitMiddleware, limiter=limiter, descriptors=expensive, cost=lambda scope: 2
    )
    costly.get("/")(root)
    assert [r.status_code for r in gets(run, costly, 2)] == [200, 429]


def test_the_decorator_limits_one_fastapi_view_by_its_arguments(limiter: Limiter, run: Run) -> None:
    app = FastAPI()

    @app.get("/search/{pages}")
    @limit(limiter, [{"search": "all"}], cost=lambda pages, **_: pages)
    async def search(pages: int) -> dict[str, int]:
        return {"pages": pages}

    @app.get("/users/{name}")
    @limit(limiter, lambda name, **_: [{"user": name}])
    async def user(name: str) -> dict[str, str]:
        return {"name": name}

    @app.get("/free")
    async def free() -> str:
        return "free"

    app.add_middleware(RateLimitMiddleware, limiter=limiter)
    assert [r.status_code for r in gets(run, app, 3, "/users/cy")] == [200, 200, 429]
    replies = gets(run, app, 2, "/search/6")
    assert [r.status_code for r in replies] == [200, 429]
    assert replies[0].json() == {"pages": 6}
    assert replies[0].headers["x-ratelimit-remaining"] == "4"
    assert json.loads(replies[1].content)["fired_limit"] == "search_pages"
    assert gets(run, app, 1, "/search/4")[0].headers["x-ratelimit-remaining"] == "0"
    assert gets(run, app, 3, "/free")[2].status_code == 200


def flask_app(limiter: Limiter) -> flask.Flask:
    app = flask.Flask(__name__)

    @app.get("/")
    def root() -> str:
        return "hello"

    @app.get("/users/<name>")
    @limit(limiter, lambda name: [{"user": name}])
    def user(name: str) -> str:
        return name

    app.wsgi_app = WSGIRateLimitMiddleware(app.wsgi_app, limiter)  # type: ignore[method-assign]
    return app


def test_a_flask_app_is_limited_by_extract_rules_and_by_the_decorator(limiter: Limiter) -> None:
    app = flask_app(limiter)
    with app.test_client() as http:
        replies = [http.get("/", headers={"x-tenant-id": "t1"}) for _ in range(4)]
        assert [r.status_code for r in replies] == [200, 200, 200, 429]
        assert replies[0].text == "hello"
        assert [r.headers["x-ratelimit-remaining"] for r in replies] == ["2", "1", "0", "0"]
        assert replies[3].headers["retry-after"] in {"19", "20"}
        assert replies[3].headers["content-type"] == "application/problem+json"
        assert json.loads(replies[3].data)["fired_limit"] == "per_tenant"
        views = [http.get("/users/dee") for _ in range(3)]
        assert [r.status_code for r in views] == [200, 200, 429]
        assert views[1].headers["x-ratelimit-remaining"] == "0"
        assert views[2].headers["content-type"] == "application/problem+json"
    limiter.close_sync()


def test_a_wsgi_apps_own_descriptors(limiter: Limiter) -> None:
    app = flask.Flask(__name__)
    app.get("/")(lambda: "hello")

    def by_user(environ: Environ) -> list[tuple[str, str]]:
        return [("user", environ.get("HTTP_X_USER", "nobody"))]

    app.wsgi_app = WSGIRateLimitMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, limiter, descriptors=by_user
    )
    with app.test_client() as http:
        assert [http.get("/", headers={"x-user": "e"}).status_code for _ in range(3)] == [
            200,
            200,
            429,
        ]
    limiter.close_sync()


FAILURE_MODES = """
domain: app
descriptors:
  - key: open
    rate_limit: {unit: minute, requests_per_unit: 1, name: open}
  - key: closed
    rate_limit: {unit: minute, requests_per_unit: 1, name: closed, failure_mode: deny}
  - key: envoy
    rate_limit: {unit: minute, requests_per_unit: 1, failure_mode: unavailable}
"""


def test_a_failing_store_answers_by_each_rules_failure_mode(
    write_config: Callable[[str], Path], run: Run
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    limiter = Limiter.from_config(write_config(FAILURE_MODES), "app", dead, redis_timeout=0.5)
    app = starlette_app([])
    app.add_middleware(
        RateLimitMiddleware,
        limiter=limiter,
        descriptors=lambda scope: [{scope["query_string"].decode(): "x"}],
    )
    opened = gets(run, app, 2, "/?open")
    assert [r.status_code for r in opened] == [200, 200]
    assert "x-ratelimit-remaining" not in opened[0].headers  # no counter was read
    closed = gets(run, app, 1, "/?closed")[0]
    assert (closed.status_code, closed.headers["retry-after"]) == (429, "1")
    assert json.loads(closed.content)["fired_limit"] == "closed"
    assert gets(run, app, 1, "/?envoy")[0].status_code == 503
    run(limiter.close())


def test_the_header_style_is_the_sidecars_setting(
    write_config: Callable[[str], Path], run: Run
) -> None:
    limiter = Limiter.from_config(write_config(CONFIG), "app", response_headers=HeaderMode.IETF)
    app = starlette_app([])
    app.add_middleware(RateLimitMiddleware, limiter=limiter)
    reply = gets(run, app, 1, x_tenant_id="t")[0]
    assert reply.headers["ratelimit-policy"] == '"per_tenant";q=3;w=60'
    assert reply.headers["ratelimit"].startswith('"per_tenant";r=2;t=')


def test_a_bad_config_names_its_file_and_line_and_an_unknown_domain_is_refused(
    write_config: Callable[[str], Path],
) -> None:
    bad = write_config("domain: app\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight}\n")
    with pytest.raises(InvalidConfigError, match=rf"{bad}:4"):
        Limiter.from_config(bad, "app")
    with pytest.raises(ValueError, match="domain 'nope' is not in the config"):
        Limiter.from_config(write_config(CONFIG), "nope")


def test_a_views_headers_join_the_middlewares_as_the_style_allows() -> None:
    one = [("X-RateLimit-Limit", "3"), ("X-RateLimit-Remaining", "2"), ("X-RateLimit-Reset", "9")]
    tighter = [
        ("X-RateLimit-Limit", "5"),
        ("X-RateLimit-Remaining", "1"),
        ("X-RateLimit-Reset", "1"),
    ]
    exchange = Exchange(list(one))
    exchange.add([*one[:1], ("X-RateLimit-Remaining", "7"), *one[2:]])
    assert exchange.headers == one  # looser: the middleware's stand
    exchange.add(tighter)
    assert exchange.headers == tighter
    ietf = Exchange([("RateLimit-Policy", '"a";q=3;w=60'), ("RateLimit", '"a";r=2;t=20')])
    ietf.add([("RateLimit-Policy", '"b";q=9;w=1'), ("RateLimit", '"b";r=8;t=1')])
    assert ietf.headers == [
        ("RateLimit-Policy", '"a";q=3;w=60, "b";q=9;w=1'),
        ("RateLimit", '"a";r=2;t=20, "b";r=8;t=1'),
    ]


def current_user(x_user: str = Header()) -> str:
    return x_user


def by_user(user: Annotated[str, Depends(current_user)]) -> list[dict[str, str]]:
    return [{"user": user}]


def pages_cost(count: int) -> int:
    return count


def test_the_dependency_limits_a_fastapi_view_by_what_fastapi_resolves(
    limiter: Limiter, run: Run
) -> None:
    app = FastAPI()
    per_user = depends(limiter, by_user)
    per_page = depends(limiter, [{"search": "all"}], cost=pages_cost)

    @app.get("/me", dependencies=[Depends(per_user)])
    async def me() -> str:
        return "me"

    @app.get("/pages/{count}", dependencies=[Depends(per_page)])
    async def pages(count: int) -> int:
        return count

    app.add_middleware(RateLimitMiddleware, limiter=limiter)
    replies = gets(run, app, 3, "/me", x_user="fay")
    assert [r.status_code for r in replies] == [200, 200, 429]
    assert replies[1].headers["x-ratelimit-remaining"] == "0"
    assert json.loads(replies[2].content)["fired_limit"] == "per_user"
    assert gets(run, app, 1, "/me", x_user="gil")[0].status_code == 200
    assert gets(run, app, 1, "/me")[0].status_code == 422  # no user: FastAPI's own answer
    paged = gets(run, app, 2, "/pages/7")
    assert [r.status_code for r in paged] == [200, 429]
    assert paged[0].headers["x-ratelimit-remaining"] == "3"
