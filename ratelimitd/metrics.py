"""Prometheus metrics: what each worker records, and the text `GET /metrics` serves.

Several worker processes add up through prometheus-client's multiprocess mode: the supervisor
gives every worker one `PROMETHEUS_MULTIPROC_DIR` (it must be set before prometheus_client is
imported, hence in the worker's environment), and any worker's `/metrics` reads them all.
One process alone keeps its metrics in memory.

Label values never come from what a client sends: domains are those of the config (others
are `_unknown`), rules are named by the config (limit overrides are `_override`), and the
per-value series of `detailed_metric` rules stop at DETAILED_SERIES_CAP per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf import json_format
from google.protobuf.message import DecodeError
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

from ratelimitd.config.model import Rule
from ratelimitd.messages import Decision, InvalidRequestError, StoreUnavailableError

if TYPE_CHECKING:  # the engine is only called here; storage imports this module
    from ratelimitd.engine import Engine, Plan

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
UNKNOWN = "_unknown"  # a domain not in the config, or a request too malformed to have one
OVERRIDE = "_override"  # a limit the request itself carried
OTHER = "_other"  # detailed series past the cap
DETAILED_SERIES_CAP = 1000
_DETAIL_CHARS = 256  # of a detailed series' descriptor label

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

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
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
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

for _result in ("success", "failure"):
    CONFIG_RELOADS.labels(_result)  # both series exist from the start, at 0

_CIRCUIT_VALUES = {"closed": 0, "open": 1, "half_open": 2}


class DecisionRecorder:
    """Counts requests and decisions. Label children are kept per (domain, rule, result):
    looking one up costs a dict access instead of prometheus-client's label handling."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str], Counter] = {}
        self._decisions: dict[tuple[str, str, str], Counter] = {}
        self._detailed: set[tuple[str, str, str]] = set()

    def request(self, domain: str | None, code: str, seconds: float) -> None:
        """One answered call: its configured domain (None if unknown), answer and duration."""
        label = (domain or UNKNOWN, code)
        child = self._requests.get(label)
        if child is None:
            child = self._requests[label] = REQUESTS.labels(*label)
        child.inc()
        REQUEST_DURATION.observe(seconds)

    def decision(self, decision: Decision, details: Sequence[str | None]) -> None:
        """Each limited status of `decision`; `details` are the descriptors' values where
        their rule wants per-value series (Plan.details)."""
        for i, status in enumerate(decision.statuses):
            rule, result = status.rule, status.result
            if rule is None or result is None:
                continue
            name = rule_label(rule)
            label = (rule.domain, name, result.value)
            child = self._decisions.get(label)
            if child is None:
                child = self._decisions[label] = DECISIONS.labels(*label)
            child.inc()
            detail = details[i] if i < len(details) else None
            if detail is not None:
                self._detail(rule.domain, name, detail[:_DETAIL_CHARS], result.value)

    def _detail(self, domain: str, rule: str, values: str, result: str) -> None:
        series = (domain, rule, values)
        if series not in self._detailed:
            if len(self._detailed) >= DETAILED_SERIES_CAP:
                values = OTHER
            else:
                self._detailed.add(series)
        DETAILED_DECISIONS.labels(domain, rule, values, result).inc()


RECORDER = DecisionRecorder()


class Call:
    """One ShouldRateLimit or Check call being counted (see `counted`)."""

    __slots__ = ("code", "domain", "store_s")

    def __init__(self) -> None:
        self.domain: str | None = None
        self.code = "INTERNAL"
        self.store_s = 0.0

    async def decide(self, engine: Engine, plan: Plan) -> Decision:
        """The engine's decision on `plan`, counted."""
        self.domain = plan.domain
        decision = await engine.decide(plan)
        self.code, self.store_s = decision.code.name, decision.store_s
        RECORDER.decision(decision, plan.details)
        return decision


# Exceptions that end a call, as the gRPC code it is answered with.
_ERROR_CODES: tuple[tuple[type[BaseException], str], ...] = (
    (InvalidRequestError, "INVALID_ARGUMENT"),
    (DecodeError, "INVALID_ARGUMENT"),
    (json_format.ParseError, "INVALID_ARGUMENT"),
    (StoreUnavailableError, "UNAVAILABLE"),
    # The client went away (a deadline, a cancelled stream) before the answer was ready.
    (asyncio.CancelledError, "CANCELLED"),
)


@contextlib.contextmanager
def counted(call: Call | None = None) -> Iterator[Call]:
    """Count one call (`call`, or a new one) and its duration: its code is the decision's,
    or the error's."""
    call = call or Call()
    started = time.perf_counter()
    try:
        yield call
    except BaseException as exc:
        call.code = next((code for kind, code in _ERROR_CODES if isinstance(exc, kind)), call.code)
        raise
    finally:
        RECORDER.request(call.domain, call.code, time.perf_counter() - started)


def rule_label(rule: Rule) -> str:
    """How metrics name a rule: its `name`, else its full key; overrides are one series."""
    if rule.source is None:
        return OVERRIDE
    return rule.name or rule.full_key


def store_call(seconds: float, requests: int, error: BaseException | None) -> None:
    """One batch of `requests` requests sent to Redis, and its error if it failed."""
    STORE_CALL_DURATION.observe(seconds)
    BATCH_SIZE.observe(requests)
    if error is not None:
        STORE_ERRORS.labels(type(error).__name__).inc()


def circuit(state: str) -> None:
    """The circuit breaker entered `state` (closed, open, half_open)."""
    CIRCUIT_STATE.set(_CIRCUIT_VALUES[state])
    CIRCUIT_TRANSITIONS.labels(state).inc()


def config_loaded(digest: str, rules: int, at: float | None = None) -> None:
    """A config is now in force."""
    CONFIG_HASH.set(int(digest[:12], 16))
    CONFIG_LOADED.set(time.time() if at is None else at)
    CONFIG_RULES.set(rules)


def config_reload(success: bool) -> None:
    """A reload was tried."""
    CONFIG_RELOADS.labels("success" if success else "failure").inc()


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
