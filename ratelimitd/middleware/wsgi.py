"""Rate limiting as WSGI middleware (Flask, Django, any WSGI app), on the same limiter as the
ASGI middleware: its coroutines run on the limiter's own event loop thread (Limiter.run), so
one store, one Redis connection and one batcher serve every request thread, with the same
Lua scripts and keys as everywhere else. Concurrency slots are held until the server closes
the response (PEP 3333's close()), or the app fails."""

from __future__ import annotations

import http
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from ratelimitd.middleware.exchange import CURRENT, Exchange
from ratelimitd.middleware.limiter import Admission, DescriptorLike, Limiter
from ratelimitd.model.messages import HttpAttributes, Request

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
# Header variables that carry no HTTP_ prefix.
_UNPREFIXED = {"CONTENT_TYPE": "content-type", "CONTENT_LENGTH": "content-length"}


def attributes(environ: Environ) -> HttpAttributes:
    """A WSGI environ as the extract rules read a request (as ext_authz describes it)."""
    headers = {
        name[5:].replace("_", "-").lower(): str(value)
        for name, value in environ.items()
        if name.startswith("HTTP_")
    }
    headers |= {_UNPREFIXED[k]: str(v) for k, v in environ.items() if k in _UNPREFIXED and v}
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    if environ.get("QUERY_STRING"):
        path = f"{path}?{environ['QUERY_STRING']}"
    return HttpAttributes(
        method=environ.get("REQUEST_METHOD", ""),
        path=path or "/",
        host=headers.get("host") or str(environ.get("SERVER_NAME", "")),
        scheme=environ.get("wsgi.url_scheme", "http"),
        headers=headers,
        source_address=environ.get("REMOTE_ADDR", ""),
        source_port=int(environ.get("REMOTE_PORT") or 0),
        destination_address=environ.get("SERVER_NAME", ""),
        destination_port=int(environ.get("SERVER_PORT") or 0),
    )


def status_line(status: int) -> str:
    """`429 Too Many Requests`."""
    return f"{status} {http.HTTPStatus(status).phrase}"


def answer_app(admission: Admission) -> WSGIApp:
    """A rejection as a WSGI app (Flask sends a view's WSGI callable as its response)."""

    def answer(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        fields = [*admission.headers, ("Content-Length", str(len(admission.body)))]
        start_response(status_line(admission.status), fields)
        return [admission.body]

    return answer


class _UntilClosed:
    """The app's response body, ending the request's admission when the server closes it."""

    def __init__(self, body: Iterable[bytes], end: Callable[[], None]) -> None:
        self._body = body
        self._end = end

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._end()


class WSGIRateLimitMiddleware:
    """WSGI middleware deciding every request with `limiter`: `descriptors(environ)` gives the
    application's descriptors of a request, else the domain's `extract:` rules build them;
    `cost(environ)` is the request's cost."""

    def __init__(
        self,
        app: WSGIApp,
        limiter: Limiter,
        descriptors: Callable[[Environ], Iterable[DescriptorLike]] | None = None,
        cost: Callable[[Environ], int] | None = None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self._descriptors = descriptors
        self._cost = cost

    def _request(self, environ: Environ) -> Request | None:
        if self._descriptors is None:
            return self.limiter.request_from_http(attributes(environ))
        cost = self._cost(environ) if self._cost else 0
        return self.limiter.request(self._descriptors(environ), cost)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        limiter = self.limiter
        admission = limiter.run(limiter.admit(self._request(environ)))
        if not admission.admitted:
            return answer_app(admission)(environ, start_response)
        exchange = Exchange(list(admission.headers))

        def start_with_headers(
            status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            return start_response(status, [*headers, *exchange.headers], exc_info)

        def end() -> None:
            if admission.lease is not None:  # else nothing to give back: no thread hop
                limiter.run(admission.end())

        token = CURRENT.set(exchange)
        try:
            body = self.app(environ, start_with_headers)
        except BaseException:
            end()
            raise
        finally:
            CURRENT.reset(token)
        return body if admission.lease is None else _UntilClosed(body, end)
