"""What the request path reports, as an interface: the engine, the store batcher, the circuit
breaker and the config reloader are handed an Observer and never reach metrics (or any global)
themselves. `NO_OBSERVER` ignores everything; ratelimitd.observe.metrics.Recorder counts it all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from ratelimitd.model.messages import Decision
from ratelimitd.model.quota import QuotaReport


class Observer(Protocol):
    """Receives the events worth counting. Every method is called on the event loop and must
    return at once: several of them run once per request."""

    def call(self, domain: str | None, code: str, seconds: float) -> None:
        """One ShouldRateLimit or Check call answered: its configured domain (None if
        unknown), its code (OK, OVER_LIMIT or a gRPC error name) and how long it took."""

    def decided(self, decision: Decision, details: Sequence[str | None]) -> None:
        """The engine decided a request; `details` are the descriptors' values where their
        rule wants per-value series (Plan.details)."""

    def store_call(self, seconds: float, requests: int, error: BaseException | None) -> None:
        """One batch of `requests` requests went to the store, and failed with `error` if
        it is not None."""

    def circuit(self, state: str) -> None:
        """The store's circuit breaker entered `state` (closed, open, half_open)."""

    def loop_lag(self, seconds: float) -> None:
        """The event loop ran a timer `seconds` after it was due."""

    def config_loaded(self, digest: str, rules: int) -> None:
        """A config is now in force."""

    def config_reload(self, success: bool) -> None:
        """A reload was tried."""

    def quota_report(self, report: QuotaReport) -> None:
        """An Envoy reported a bucket of a limited rule to the RLQS front door and was
        assigned its share."""


class NoObserver:
    """An Observer that ignores everything: the default wherever nothing is counted."""

    def call(self, domain: str | None, code: str, seconds: float) -> None:
        """Ignored."""

    def decided(self, decision: Decision, details: Sequence[str | None]) -> None:
        """Ignored."""

    def store_call(self, seconds: float, requests: int, error: BaseException | None) -> None:
        """Ignored."""

    def circuit(self, state: str) -> None:
        """Ignored."""

    def loop_lag(self, seconds: float) -> None:
        """Ignored."""

    def config_loaded(self, digest: str, rules: int) -> None:
        """Ignored."""

    def config_reload(self, success: bool) -> None:
        """Ignored."""

    def quota_report(self, report: QuotaReport) -> None:
        """Ignored."""


NO_OBSERVER: Observer = NoObserver()

# How often watch_loop_lag measures: a few timers a second cost nothing.
LOOP_LAG_INTERVAL_S = 0.25


async def watch_loop_lag(observer: Observer, interval: float = LOOP_LAG_INTERVAL_S) -> None:
    """Report, until cancelled, how late the event loop wakes a sleeper every `interval`
    seconds: time it spent on other work, or waiting for a CPU."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval
        await asyncio.sleep(interval)
        observer.loop_lag(max(0.0, loop.time() - due))
