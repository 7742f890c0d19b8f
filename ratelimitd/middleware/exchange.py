"""The request the middleware is serving, as the per-endpoint decorator finds it: the headers
its checks add to the response. A context variable, so it follows the request into the view
(and into the thread a framework may run a synchronous view on)."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class Exchange:
    """One request in the middleware: `headers` are added to its response."""

    headers: list[tuple[str, str]] = field(default_factory=list)


CURRENT: ContextVar[Exchange | None] = ContextVar("ratelimitd_exchange", default=None)
