"""Per-endpoint limits: a decorator for views, for limits only the view can compute (the user
its dependencies authenticated, a cost read from the body).

    @app.post("/search")
    @limit(limiter, lambda user, **_: [{"user": user.id}], cost=lambda body, **_: body.pages)
    async def search(user: User = Depends(current_user), body: Query = ...) -> ...

`descriptors` and `cost` receive the view's keyword arguments (FastAPI passes every parameter
by keyword, Flask the URL's variables), or are given as they are. The limit is checked when
the view is called, the view's slots held until it returns.

- async views (FastAPI, Starlette): a rejection raises RateLimitedError, which RateLimitMiddleware
  (around the app) turns into the 429; admitted, its headers join the response's.
- plain views (Flask): a rejection is returned as a WSGI app, which Flask sends as the
  response; admitted, WSGIRateLimitMiddleware (if around the app) adds the headers. The
  limiter's coroutines run on its own loop thread (Limiter.run).
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar, cast

from ratelimitd.middleware.asgi import RateLimitedError
from ratelimitd.middleware.exchange import CURRENT
from ratelimitd.middleware.limiter import Admission, DescriptorLike, Limiter
from ratelimitd.middleware.wsgi import answer_app
from ratelimitd.model.messages import Request

View = TypeVar("View", bound=Callable[..., Any])
Descriptors = Callable[..., Iterable[DescriptorLike]] | Iterable[DescriptorLike]
Cost = Callable[..., int] | int


def _admitted(admission: Admission) -> None:
    exchange = CURRENT.get()
    if exchange is not None:
        exchange.add(admission.headers)


def _requester(
    limiter: Limiter, descriptors: Descriptors, cost: Cost
) -> Callable[[dict[str, Any]], Request | None]:
    """The request of a call's keyword arguments."""

    def request(arguments: dict[str, Any]) -> Request | None:
        found = descriptors(**arguments) if callable(descriptors) else descriptors
        return limiter.request(found, cost(**arguments) if callable(cost) else cost)

    return request


def limit(limiter: Limiter, descriptors: Descriptors, *, cost: Cost = 0) -> Callable[[View], View]:
    """Limit a view by `descriptors` of `limiter`'s domain, each request costing `cost`."""
    request = _requester(limiter, descriptors, cost)

    def decorate(view: View) -> View:
        if inspect.iscoroutinefunction(view):

            @functools.wraps(view)
            async def limited(*args: Any, **kwargs: Any) -> Any:
                admission = await limiter.admit(request(kwargs))
                if not admission.admitted:
                    raise RateLimitedError(admission)
                _admitted(admission)
                try:
                    return await cast(Callable[..., Awaitable[Any]], view)(*args, **kwargs)
                finally:
                    await admission.end()

            return cast(View, limited)

        @functools.wraps(view)
        def limited_plain(*args: Any, **kwargs: Any) -> Any:
            admission = limiter.run(limiter.admit(request(kwargs)))
            if not admission.admitted:
                return answer_app(admission)
            _admitted(admission)
            try:
                return view(*args, **kwargs)
            finally:
                if admission.lease is not None:
                    limiter.run(admission.end())

        return cast(View, limited_plain)

    return decorate


def depends(
    limiter: Limiter, descriptors: Descriptors, *, cost: Cost = 0
) -> Callable[..., AsyncIterator[None]]:
    """The limit as a FastAPI dependency: `Depends(depends(limiter, descriptors, cost=...))`.

    It takes the parameters `descriptors` and `cost` declare (their signatures, merged, are
    its own), so FastAPI resolves them as for any dependency: query and path parameters,
    headers, sub-dependencies (`def by_user(user: Annotated[User, Depends(current_user)])`).
    A yield dependency: the request's slots are held until its response is sent. Rejections
    raise RateLimitedError, for RateLimitMiddleware around the app to answer.
    """
    request = _requester(limiter, descriptors, cost)

    async def dependency(**arguments: Any) -> AsyncIterator[None]:
        admission = await limiter.admit(request(arguments))
        if not admission.admitted:
            raise RateLimitedError(admission)
        _admitted(admission)
        try:
            yield
        finally:
            await admission.end()

    parameters: dict[str, inspect.Parameter] = {}
    for given in (descriptors, cost):
        if not callable(given):
            continue
        # Evaluated here, in the callable's module: FastAPI would evaluate string annotations
        # (`from __future__ import annotations`) in this module's globals.
        try:
            hints = typing.get_type_hints(given, include_extras=True)
        except (NameError, TypeError):
            hints = {}
        for name, parameter in inspect.signature(given).parameters.items():
            if parameter.kind is not parameter.VAR_KEYWORD:
                annotation = hints.get(name, parameter.annotation)
                keyword = parameter.replace(kind=parameter.KEYWORD_ONLY, annotation=annotation)
                parameters.setdefault(name, keyword)
    # FastAPI reads a dependency's parameters from its signature.
    dependency.__signature__ = inspect.Signature(list(parameters.values()))  # type: ignore[attr-defined]
    return dependency
