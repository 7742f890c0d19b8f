"""ratelimitd in the application: the sidecar's engine, YAML, algorithms and counters enforced
by ASGI or WSGI middleware, per-view decorators and FastAPI dependencies, plus concurrency
limits (docs/middleware.md).

    limiter = Limiter.from_config("ratelimit.yaml", domain="api", redis_url="redis://...")
    app.add_middleware(RateLimitMiddleware, limiter=limiter)          # FastAPI, Starlette
    app.wsgi_app = WSGIRateLimitMiddleware(app.wsgi_app, limiter)     # Flask

No web framework is imported here.
"""

from ratelimitd.middleware.asgi import RateLimitedError, RateLimitMiddleware
from ratelimitd.middleware.endpoint import depends, limit
from ratelimitd.middleware.limiter import Admission, Limiter
from ratelimitd.middleware.wsgi import WSGIRateLimitMiddleware

__all__ = [
    "Admission",
    "Limiter",
    "RateLimitMiddleware",
    "RateLimitedError",
    "WSGIRateLimitMiddleware",
    "depends",
    "limit",
]
