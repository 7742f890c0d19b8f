"""Prometheus metrics: what each worker records, and the text `GET /metrics` serves.

The request path counts in plain numbers of the process (Recorder), published into
prometheus-client's metrics on every scrape the process answers and once a second. Several
worker processes add up through prometheus-client's multiprocess mode: the supervisor gives
every worker one `PROMETHEUS_MULTIPROC_DIR` (it must be set before prometheus_client is
imported, hence in the worker's environment), and any worker's `/metrics` reads them all.
One process alone keeps its metrics in memory.

Label values never come from what a client sends: domains are those of the config (others
are `_unknown`), rules are named by the config (limit overrides are `_override`), and the
per-value series of `detailed_metric` rules stop at DETAILED_SERIES_CAP per process.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import time
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

from ratelimitd.model.messages import Decision
from ratelimitd.model.quota import QuotaReport
from ratelimitd.model.rules import Rule

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
UNKNOWN = "_unknown"  # a domain not in the config, or a request too malformed to have one
OVERRIDE = "_override"  # a limit the request itself carried
OTHER = "_other"  # detailed series past the cap
DETAILED_SERIES_CAP = 1000
_DETAIL_CHARS = 256  # of a detailed series' descriptor label

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

REQUESTS = Counter(
    "ratelimitd_requests",
    "ShouldRateLimit and Authorization/Check calls by domain and answer: OK, OVER_LIMIT, "
    "or the error code (a Check answered 503 counts as UNAVAILABLE).",
    ["domain", "code"],
)
DECISIONS = Counter(
    "ratelimitd_decisions",
    "Limited descriptors by rule (its name, else its full key) and result.",
    ["domain", "rule", "result"],
)
DETAILED_DECISIONS = Counter(
    "ratelimitd_detailed_decisions",
    "Decisions of detailed_metric rules by descriptor values (capped; the rest: _other).",
    ["domain", "rule", "descriptor", "result"],
)
REQUEST_DURATION = Histogram(
    "ratelimitd_request_duration_seconds",
    "Time to answer ShouldRateLimit, from decoding to encoding.",
    buckets=_LATENCY_BUCKETS,
)
STORE_CALL_DURATION = Histogram(
    "ratelimitd_store_call_duration_seconds",
    "Time of one batch of requests sent to Redis (one script call per slot), failures included.",
    buckets=_LATENCY_BUCKETS,
)
STORE_ERRORS = Counter(
    "ratelimitd_store_errors", "Failed batches sent to Redis, by error type.", ["error"]
)
BATCH_SIZE = Histogram(
    "ratelimitd_store_batch_requests",
    "Requests in one batch sent to Redis.",
    buckets=_BATCH_BUCKETS,
)
CIRCUIT_STATE = Gauge(
    "ratelimitd_store_circuit_state",
    "The store circuit breaker of each worker: 0 closed, 1 open, 2 half-open.",
    multiprocess_mode="liveall",
)
CIRCUIT_TRANSITIONS = Counter(
    "ratelimitd_store_circuit_transitions",
    "Circuit breaker state changes, by the state entered.",
    ["state"],
)
CONFIG_RELOADS = Counter(
    "ratelimitd_config_reloads", "Config reloads by result: success or failure.", ["result"]
)
CONFIG_HASH = Gauge(
    "ratelimitd_config_hash",
    "The first 48 bits of the SHA-256 of each worker's config files, as a number.",
    multiprocess_mode="liveall",
)
CONFIG_LOADED = Gauge(
    "ratelimitd_config_last_load_success_timestamp_seconds",
    "When each worker loaded the config it serves (Unix time).",
    multiprocess_mode="liveall",
)
CONFIG_RULES = Gauge(
    "ratelimitd_config_rules", "Rules in each worker's config.", multiprocess_mode="liveall"
)

RLQS_REPORTED = Counter(
    "ratelimitd_rlqs_reported_requests",
    "Requests the rate_limit_quota filters reported for buckets of each limited rule, by "
    "what they answered (allowed, denied): rate() of allowed is the fleet's admitted rate.",
    ["domain", "rule", "result"],
)
RLQS_ENVOYS = Gauge(
    "ratelimitd_rlqs_reporting_envoys",
    "Envoys reporting the rule's bucket reported last (to each worker).",
    ["domain", "rule"],
    multiprocess_mode="liveall",
)
RLQS_DEMAND = Gauge(
    "ratelimitd_rlqs_demand_requests_per_second",
    "Requests per second the Envoys of the rule's bucket reported last offer (allowed and "
    "denied, smoothed).",
    ["domain", "rule"],
    multiprocess_mode="liveall",
)
RLQS_ASSIGNED = Gauge(
    "ratelimitd_rlqs_assigned_fraction",
    "Fractions of the quota assigned to the Envoys of the rule's bucket reported last, "
    "summed (1 when the split is settled; above while an Envoy's share waits to shrink).",
    ["domain", "rule"],
    multiprocess_mode="liveall",
)
RLQS_QUOTA = Gauge(
    "ratelimitd_rlqs_quota_requests_per_second",
    "The fleet-wide quota of the rule, per second.",
    ["domain", "rule"],
    multiprocess_mode="liveall",
)

LOOP_LAG = Histogram(
    "ratelimitd_event_loop_lag_seconds",
    "How late the event loop ran a timer that was due: time the loop spent on other work "
    "(or without a CPU). Store timeouts do not count such time against the store.",
    buckets=_LAG_BUCKETS,
)

for _result in ("success", "failure"):
    CONFIG_RELOADS.labels(_result)  # both series exist from the start, at 0

_CIRCUIT_VALUES = {"closed": 0, "open": 1, "half_open": 2}
# How often a worker publishes what it counted, besides on every scrape it answers itself.
PUBLISH_INTERVAL_S = 1.0


class Buckets:
    """A histogram in plain numbers: observation counts per bucket (the last is +Inf) and
    their sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count one observation."""
        # Prometheus buckets are `le`: a value equal to a bound belongs to that bound's bucket.
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def publish(self, histogram: Histogram) -> None:
        """Add what was observed since the last publish to `histogram`, then start over."""
        if not any(self.counts):
            return
        # prometheus-client has no public way to add many observations at once, and one
        # observe() per request is the shared-memory write this class exists to avoid.
        # tests/test_metrics.py checks that the exposition adds up.
        for bucket, count in zip(histogram._buckets, self.counts, strict=True):
            if count:
                bucket.inc(count)
        histogram._sum.inc(self.total)
        self.counts = [0] * len(self.counts)
        self.total = 0.0


class Recorder:
    """The Observer that feeds /metrics. The request path only adds to plain per-process
    integers; `publish` moves them into prometheus-client's metrics (shared memory files
    when workers share a PROMETHEUS_MULTIPROC_DIR) on every scrape this process answers and
    once a second (`publish_periodically`), so no request pays for a shared-memory write.

    Label values never come from what a client sends (see the module docstring).
    """

    def __init__(self) -> None:
        self._calls: dict[tuple[str, str], int] = {}
        self._decisions: dict[tuple[str, str, str], int] = {}
        self._detailed: dict[tuple[str, str, str, str], int] = {}
        self._detailed_series: set[tuple[str, str, str]] = set()
        self._store_errors: dict[str, int] = {}
        self._rlqs_reported: dict[tuple[str, str, str], int] = {}
        self._rlqs_split: dict[tuple[str, str], tuple[int, float, float, float]] = {}
        self._call_seconds = Buckets(_LATENCY_BUCKETS)
        self._store_seconds = Buckets(_LATENCY_BUCKETS)
        self._batch_sizes = Buckets(_BATCH_BUCKETS)
        self._loop_lag = Buckets(_LAG_BUCKETS)

    def call(self, domain: str | None, code: str, seconds: float) -> None:
        """One answered call: its configured domain (None if unknown), answer and duration."""
        label = (domain or UNKNOWN, code)
        calls = self._calls
        calls[label] = calls.get(label, 0) + 1
        self._call_seconds.observe(seconds)

    def decided(self, decision: Decision, details: Sequence[str | None]) -> None:
        """Each limited status of `decision`; `details` are the descriptors' values where
        their rule wants per-value series (Plan.details)."""
        decisions = self._decisions
        for i, status in enumerate(decision.statuses):
            rule, result = status.rule, status.result
            if rule is None or result is None:
                continue
            label = (rule.domain, rule_label(rule), result)
            decisions[label] = decisions.get(label, 0) + 1
            detail = details[i] if i < len(details) else None
            if detail is not None:
                self._detail(label, detail[:_DETAIL_CHARS])

    def _detail(self, label: tuple[str, str, str], values: str) -> None:
        domain, rule, result = label
        series = (domain, rule, values)
        if series not in self._detailed_series:
            if len(self._detailed_series) >= DETAILED_SERIES_CAP:
                values = OTHER
            else:
                self._detailed_series.add(series)
        key = (domain, rule, values, result)
        self._detailed[key] = self._detailed.get(key, 0) + 1

    def store_call(self, seconds: float, requests: int, error: BaseException | None) -> None:
        """One batch of `requests` requests sent to Redis, and its error if it failed."""
        self._store_seconds.observe(seconds)
        self._batch_sizes.observe(requests)
        if error is not None:
            name = type(error).__name__
            self._store_errors[name] = self._store_errors.get(name, 0) + 1

    def loop_lag(self, seconds: float) -> None:
        """The event loop ran a timer `seconds` late."""
        self._loop_lag.observe(seconds)

    @staticmethod
    def circuit(state: str) -> None:
        """The circuit breaker entered `state` (closed, open, half_open)."""
        CIRCUIT_STATE.set(_CIRCUIT_VALUES[state])
        CIRCUIT_TRANSITIONS.labels(state).inc()

    @staticmethod
    def config_loaded(digest: str, rules: int) -> None:
        """A config is now in force."""
        CONFIG_HASH.set(int(digest[:12], 16))
        CONFIG_LOADED.set(time.time())
        CONFIG_RULES.set(rules)

    @staticmethod
    def config_reload(success: bool) -> None:
        """A reload was tried."""
        CONFIG_RELOADS.labels("success" if success else "failure").inc()

    def quota_report(self, report: QuotaReport) -> None:
        """An RLQS bucket report: counted, and the bucket's split as it stands now."""
        labels = (report.domain, report.rule)
        reported = self._rlqs_reported
        for result, count in (("allowed", report.allowed), ("denied", report.denied)):
            key = (*labels, result)
            reported[key] = reported.get(key, 0) + count
        self._rlqs_split[labels] = (
            report.reporting,
            report.demand,
            report.assigned,
            report.quota,
        )

    def publish(self) -> None:
        """Add everything counted since the last publish to prometheus-client's metrics."""
        for counts, counter in (
            (self._calls, REQUESTS),
            (self._decisions, DECISIONS),
            (self._detailed, DETAILED_DECISIONS),
        ):
            for labels, count in counts.items():
                counter.labels(*labels).inc(count)
            counts.clear()
        for labels, count in self._rlqs_reported.items():
            RLQS_REPORTED.labels(*labels).inc(count)
        self._rlqs_reported.clear()
        for labels, values in self._rlqs_split.items():
            for gauge, value in zip(
                (RLQS_ENVOYS, RLQS_DEMAND, RLQS_ASSIGNED, RLQS_QUOTA), values, strict=True
            ):
                gauge.labels(*labels).set(value)
        self._rlqs_split.clear()
        for name, count in self._store_errors.items():
            STORE_ERRORS.labels(name).inc(count)
        self._store_errors.clear()
        self._call_seconds.publish(REQUEST_DURATION)
        self._store_seconds.publish(STORE_CALL_DURATION)
        self._batch_sizes.publish(BATCH_SIZE)
        self._loop_lag.publish(LOOP_LAG)

    def exposition(self) -> bytes:
        """/metrics: this process's counts published, then every worker's metrics."""
        self.publish()
        return exposition()

    async def publish_periodically(self, interval: float = PUBLISH_INTERVAL_S) -> None:
        """Publish every `interval` seconds until cancelled, so that a scrape answered by
        another worker sees this one's counts at most that late; publishes once more when
        cancelled."""
        try:
            while True:
                await asyncio.sleep(interval)
                self.publish()
        finally:
            self.publish()


def rule_label(rule: Rule) -> str:
    """How metrics name a rule: its `name`, else its full key; overrides are one series."""
    if rule.source is None:
        return OVERRIDE
    return rule.label


def exposition() -> bytes:
    """The metrics of every worker (or of this process alone), in the text format."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return generate_latest(REGISTRY)
    _forget_exited_workers(directory)
    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def _forget_exited_workers(directory: str) -> None:
    """Drop the live gauges of workers that are gone (a restart gets a new pid); their
    counters keep counting."""
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = int(path.stem.rpartition("_")[2])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            _multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass  # alive, someone else's: not ours to judge
