"""The request the middleware is serving, as the per-endpoint decorator finds it: the headers
its checks add to the response. A context variable, so it follows the request into the view
(and into the thread a framework may run a synchronous view on)."""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

# The styles that describe one limit (xratelimit, legacy): by their remaining field.
_REMAINING = ("x-ratelimit-remaining", "ratelimit-remaining")


@dataclass
class Exchange:
    """One request in the middleware: `headers` are added to its response."""

    headers: list[tuple[str, str]] = field(default_factory=list)

    def add(self, fields: Sequence[tuple[str, str]]) -> None:
        """Add the rate limit headers of another check of the request (a decorated view's
        after the middleware's): where the style describes one limit, the tighter check's
        headers (fewer remaining) stand alone; the ietf fields are lists of limits, so their
        items are joined."""
        if not self.headers:
            self.headers = list(fields)
            return
        mine = {name.lower(): value for name, value in self.headers}
        theirs = {name.lower(): value for name, value in fields}
        for name in _REMAINING:
            if name in mine and name in theirs:
                if int(theirs[name]) < int(mine[name]):
                    self.headers = list(fields)
                return
        joined = [
            (name, f"{value}, {theirs[name.lower()]}" if name.lower() in theirs else value)
            for name, value in self.headers
        ]
        self.headers = joined + [(n, v) for n, v in fields if n.lower() not in mine]


CURRENT: ContextVar[Exchange | None] = ContextVar("ratelimitd_exchange", default=None)
