"""The run of `ratelimitd simulate`: each request is decided by the real Engine on a
MemoryStore whose FakeClock is set to the request's time, so nothing sleeps and an hour of
traffic takes only as long as its decisions. The Report says, per rule, how many requests
reached it, how many were admitted and rejected, when it first rejected one and the longest
Retry-After it asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

from ratelimitd.core.engine import Engine
from ratelimitd.core.headers import US_PER_S, HeaderMode, whole_seconds
from ratelimitd.core.plan import Plan
from ratelimitd.model.messages import Code, Decision, Request, Result
from ratelimitd.model.rules import Config, Rule
from ratelimitd.storage.clock import FakeClock
from ratelimitd.storage.memory import MemoryStore
from ratelimitd.tools.simulate.traffic import Event

# t=0 is this Unix time, a multiple of every unit (the 30-day month and 365-day year too), so
# fixed and sliding windows start at t=0 and at every whole unit after it.
START_US = 1_324_512_000 * US_PER_S
# A rule's own verdict was "over", whether or not that rejected the request (shadow mode).
_OVER = frozenset({Result.OVER_LIMIT, Result.SHADOW_OVER_LIMIT})


@dataclass
class RuleStats:
    """What one rule saw. A request with two descriptors matching the rule counts twice."""

    rule: Rule
    offered_at: list[int] = field(default_factory=list)  # us since the start, one per hit
    admitted_at: list[int] = field(default_factory=list)  # ... of those the request passed
    rejected: int = 0  # hits this rule judged over its limit
    first_rejection_us: int | None = None
    max_retry_after_s: int | None = None  # the longest Retry-After this rule alone asked for

    @property
    def offered(self) -> int:
        """Hits on this rule."""
        return len(self.offered_at)

    @property
    def admitted(self) -> int:
        """Hits whose request was admitted (so this rule's counter was charged)."""
        return len(self.admitted_at)

    @property
    def rejected_by_other(self) -> int:
        """Hits this rule would admit, in requests another limit rejected."""
        return self.offered - self.admitted - self.rejected


@dataclass
class Report:
    """The outcome of a replay: totals, and per rule in config order."""

    requests: int = 0
    admitted: int = 0
    no_limit: int = 0  # descriptors without a limit: no rule, unlimited, replaced, unknown domain
    duration_us: int = 0  # the time of the last request
    first_rejection_us: int | None = None
    max_retry_after_s: int | None = None  # the longest Retry-After header sent
    rules: list[RuleStats] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        """Requests answered OVER_LIMIT."""
        return self.requests - self.admitted


class _Recorder:
    """Adds decisions to a Report."""

    def __init__(self) -> None:
        self.report = Report()
        self.stats: dict[Rule, RuleStats] = {}

    def add(self, t_us: int, decision: Decision) -> None:
        report = self.report
        report.requests += 1
        admitted = decision.code is Code.OK
        if admitted:
            report.admitted += 1
        else:
            # The Retry-After sent: every rejection carries one, whatever the header mode.
            wait = int(dict(decision.response_headers)["Retry-After"])
            report.max_retry_after_s = max(report.max_retry_after_s or 0, wait)
            if report.first_rejection_us is None:
                report.first_rejection_us = t_us
        for status in decision.statuses:
            rule = status.rule
            if rule is None:
                report.no_limit += 1
                continue
            stats = self.stats.get(rule)
            if stats is None:
                stats = self.stats[rule] = RuleStats(rule)
            stats.offered_at.append(t_us)
            if status.result in _OVER:
                stats.rejected += 1
                if stats.first_rejection_us is None:
                    stats.first_rejection_us = t_us
                # As Retry-After is computed, but for this status alone (a shadow one is OK).
                wait = max(1, whole_seconds(status.reset_us or 0))
                stats.max_retry_after_s = max(stats.max_retry_after_s or 0, wait)
            elif admitted:
                stats.admitted_at.append(t_us)


async def _replay(engine: Engine, clock: FakeClock, events: Sequence[Event]) -> _Recorder:
    recorder = _Recorder()
    # Planning (matching and key building) costs as much as deciding; requests repeat a lot.
    plans: dict[Request, Plan] = {}
    for event in events:
        clock.now_us = START_US + event.t_us
        plan = plans.get(event.request)
        if plan is None:
            plan = plans[event.request] = engine.plan(event.request)
        for _ in range(event.repeat):
            recorder.add(event.t_us, await engine.decide(plan))
    return recorder


def simulate(config: Config, events: Iterable[Event]) -> Report:
    """Replay `events` in time order against `config` on a fresh memory store."""
    ordered = sorted(events, key=attrgetter("t_us"))
    clock = FakeClock(START_US)
    # Only Retry-After is read, and the engine adds it in every header mode.
    engine = Engine(config, MemoryStore(clock), header_mode=HeaderMode.NONE)
    recorder = asyncio.run(_replay(engine, clock, ordered))
    report = recorder.report
    report.duration_us = ordered[-1].t_us if ordered else 0
    order = {rule: i for i, rule in enumerate(config.rules)}
    # Envoy's limit overrides are not in the config: after its rules, as first met.
    report.rules = sorted(recorder.stats.values(), key=lambda s: order.get(s.rule, len(order)))
    return report
