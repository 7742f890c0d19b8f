"""Rate limiting as pure ASGI middleware (Starlette, FastAPI, any ASGI app; no framework
imported): each HTTP request is decided before the app sees it, from the descriptors the
domain's `extract:` rules build (as the ext_authz door) or from the application's own
`descriptors(scope)`. Admitted responses carry the rate limit headers; rejected requests get
the sidecar's 429 (or 503) and never reach the app. Concurrency slots are held until the app
has finished the response, or failed."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from ratelimitd.middleware.exchange import CURRENT, Exchange
from ratelimitd.middleware.limiter import Admission, DescriptorLike, Limiter
from ratelimitd.model.messages import HttpAttributes, Request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# The application's descriptors of a request, from its ASGI scope (plain or async).
ScopeDescriptors = Callable[[Scope], Iterable[DescriptorLike] | Awaitable[Iterable[DescriptorLike]]]


class RateLimitedError(Exception):
    """Raised by a rate limited view (ratelimitd.middleware.limit) that is rejected; the
    middleware around the app turns it into the answer."""

    def __init__(self, admission: Admission) -> None:
        super().__init__(f"rate limited ({admission.status})")
        self.admission = admission


def attributes(scope: Scope) -> HttpAttributes:
    """An ASGI HTTP scope as the extract rules read a request (as ext_authz describes it)."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = value if name not in headers else f"{headers[name]},{value}"
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else scope.get("path", "/")
    query = scope.get("query_string", b"")
    if query:
        path = f"{path}?{query.decode('latin-1')}"
    client = scope.get("client") or ("", 0)
    server = scope.get("server") or ("", 0)
    return HttpAttributes(
        method=scope.get("method", ""),
        path=path,
        host=headers.get("host", ""),
        scheme=scope.get("scheme", "http"),
        headers=headers,
        source_address=client[0] or "",
        source_port=client[1] or 0,
        destination_address=server[0] or "",
        destination_port=server[1] or 0,
    )


def encoded(fields: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Header fields as ASGI sends them."""
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in fields]


async def send_answer(send: Send, admission: Admission) -> None:
    """Send a rejection: its status, headers and body."""
    fields = encoded(admission.headers)
    fields.append((b"content-length", str(len(admission.body)).encode()))
    await send({"type": "http.response.start", "status": admission.status, "headers": fields})
    await send({"type": "http.response.body", "body": admission.body})


class RateLimitMiddleware:
    """ASGI middleware deciding every HTTP request with `limiter`.

    `descriptors(scope)` (plain or async) gives the application's descriptors of a request;
    without it the domain's `extract:` rules build them. `cost(scope)` is the request's cost
    (each descriptor's, unless it carries its own). Other scopes (websocket, lifespan) pass
    through untouched.
    """

    def __init__(
        self,
        app: ASGIApp,
        limiter: Limiter,
        descriptors: ScopeDescriptors | None = None,
        cost: Callable[[Scope], int] | None = None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self._descriptors = descriptors
        self._cost = cost

    async def _request(self, scope: Scope) -> Request | None:
        if self._descriptors is None:
            return self.limiter.request_from_http(attributes(scope))
        found = self._descriptors(scope)
        if inspect.isawaitable(found):
            found = await found
        return self.limiter.request(found, self._cost(scope) if self._cost else 0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        admission = await self.limiter.admit(await self._request(scope))
        if not admission.admitted:
            await send_answer(send, admission)
            return
        exchange = Exchange(list(admission.headers))
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), *encoded(exchange.headers)]
            await send(message)

        token = CURRENT.set(exchange)
        try:
            await self.app(scope, receive, send_with_headers)
        except RateLimitedError as rejected:
            if started:
                raise
            await send_answer(send, rejected.admission)
        finally:
            CURRENT.reset(token)
            await admission.end()
