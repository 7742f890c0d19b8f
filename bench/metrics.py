"""What ratelimitd answered, counted by ratelimitd itself: its Prometheus counters at
`GET /metrics` on --http-addr (summed over its workers), read before and after a load.

h2load sees HTTP statuses only, and a gRPC error travels in the trailer of an HTTP 200. The
counters tell every call's gRPC code (`ratelimitd_requests_total{code}`), every limited
descriptor's result (`ratelimitd_decisions_total{rule,result}`: `failure_allowed` is an
answer the store could not give) and the store's failed batches.
"""

from __future__ import annotations

import time
import urllib.request
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families

from bench.load import LoadResult
from bench.procs import HarnessError

ANSWERS = ("OK", "OVER_LIMIT")  # a decision; every other code is an error
SETTLE_TIMEOUT_S = 5.0  # for calls still in flight when the load ended to be counted
Key = TypeVar("Key", bound=Hashable)


@dataclass(frozen=True)
class Counts:
    """ratelimitd's counters at one moment (or the difference of two)."""

    codes: Counter[str] = field(default_factory=Counter)  # calls by gRPC code
    decisions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (rule, result)
    store_errors: Counter[str] = field(default_factory=Counter)  # failed batches by error

    def __sub__(self, earlier: Counts) -> Counts:
        return Counts(
            _minus(self.codes, earlier.codes),
            _minus(self.decisions, earlier.decisions),
            _minus(self.store_errors, earlier.store_errors),
        )

    @property
    def answered(self) -> int:
        """Calls answered, whatever the code."""
        return sum(self.codes.values())

    @property
    def errors(self) -> dict[str, int]:
        """Calls answered with a code other than OK and OVER_LIMIT, by code."""
        return {code: n for code, n in self.codes.items() if code not in ANSWERS and n}

    def decided(self, *, rule: str | None = None, results: tuple[str, ...] = ()) -> int:
        """Decisions of `rule` (any rule: None) with one of `results` (any: empty)."""
        return sum(
            n
            for (each_rule, result), n in self.decisions.items()
            if (rule is None or each_rule == rule) and (not results or result in results)
        )


def _minus(now: Counter[Key], then: Counter[Key]) -> Counter[Key]:
    """The counters that changed, by how much."""
    return Counter({k: n - then.get(k, 0) for k, n in now.items() if n != then.get(k, 0)})


# ratelimitd's workers publish their counts once a second (the one answering a scrape, at
# once): counts still moving after a load settle within this.
PUBLISH_INTERVAL_S = 1.0


def settled_scrape(url: str) -> Counts:
    """The counters once they stopped moving: with several workers, a scrape right after a
    load misses what the other workers counted in their last second."""
    counts = scrape(url)
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        time.sleep(PUBLISH_INTERVAL_S + 0.2)
        again = scrape(url)
        if again == counts:
            break
        counts = again
    return counts


def scrape(url: str) -> Counts:
    """Read ratelimitd's counters from its /metrics `url`."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError as exc:
        raise HarnessError(f"GET {url}: {exc}") from exc
    codes: Counter[str] = Counter()
    decisions: Counter[tuple[str, str]] = Counter()
    store_errors: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels, value = sample.labels, int(sample.value)
            if sample.name == "ratelimitd_requests_total":
                codes[labels["code"]] += value
            elif sample.name == "ratelimitd_decisions_total":
                decisions[labels["rule"], labels["result"]] += value
            elif sample.name == "ratelimitd_store_errors_total":
                store_errors[labels["error"]] += value
    return Counts(codes, decisions, store_errors)


@dataclass(frozen=True)
class Accounting:
    """Every call sent during a load, accounted for by ratelimitd's counters.

    h2load stops with requests in flight (`cut_off`): ratelimitd may count them too, answered
    or, when the client closed them first, with an error code (INTERNAL on the grpc
    transport). Counted calls beyond those sent are theirs, and so are error codes up to that
    many; an error code beyond them is an error of a call sent.
    """

    sent: int  # calls the clients finished: h2load's `done`, the probes
    cut_off: int  # h2load's requests still in flight when it stopped: counted or not
    counts: Counts  # after - before

    @property
    def unanswered(self) -> int:
        """Calls sent that ratelimitd never counted."""
        return max(0, self.sent - self.counts.answered)

    @property
    def beyond(self) -> int:
        """Calls counted beyond those sent: cut off in flight (or someone else's)."""
        return max(0, self.counts.answered - self.sent)

    @property
    def closed(self) -> int:
        """Error codes that may be those of calls cut off in flight."""
        return min(sum(self.counts.errors.values()), self.beyond)

    @property
    def errors(self) -> int:
        """Calls sent and answered with an error code, plus calls sent and never answered."""
        return sum(self.counts.errors.values()) - self.closed + self.unanswered

    @property
    def failure_allowed(self) -> int:
        """Limits answered OK because the store failed (`failure_mode: allow`)."""
        return self.counts.decided(results=("failure_allowed",))

    def summary(self) -> str:
        """`1,234 sent, 1,234 answered (OK 1,200, OVER_LIMIT 34)`, and what went wrong."""
        counts = self.counts
        codes = ", ".join(f"{code} {n:,}" for code, n in sorted(counts.codes.items()))
        text = f"{self.sent:,} sent, {counts.answered:,} counted ({codes or 'none'})"
        if self.beyond:
            text += (
                f", of them {self.beyond:,} of the {self.cut_off:,} cut off in flight at the end"
            )
            if self.closed:
                text += f" ({self.closed:,} with an error code: closed by the client)"
        if self.beyond > self.cut_off:
            text += " (more calls than requests: someone else's?)"
        if self.unanswered:
            text += f", {self.unanswered:,} never answered"
        if counts.store_errors:
            errors = ", ".join(f"{e} {n:,}" for e, n in sorted(counts.store_errors.items()))
            text += f"; failed store batches: {errors}"
        return text

    def check(self, problems: list[str], warnings: list[str], what: str = "") -> None:
        """Errors are problems; fail-open decisions (a store error or timeout answered by
        `failure_mode: allow`) are a warning: the answer was given, but not decided."""
        prefix = f"{what}: " if what else ""
        if self.errors:
            codes = ", ".join(f"{code} {n:,}" for code, n in sorted(self.counts.errors.items()))
            parts = [f"codes: {codes}"] if codes else []
            if self.closed:
                parts.append(f"{self.closed:,} of them cut off in flight")
            if self.unanswered:
                parts.append(f"never answered {self.unanswered:,}")
            problems.append(f"{prefix}{self.errors:,} gRPC errors ({'; '.join(parts)})")
        if self.failure_allowed:
            warnings.append(
                f"{prefix}{self.failure_allowed:,} fail-open decisions (failure_allowed: a store "
                "error or timeout answered by failure_mode allow)"
            )


def account(url: str, before: Counts, loads: Sequence[LoadResult], probes: int = 0) -> Accounting:
    """The calls of h2load runs `loads` and `probes` probe calls, accounted for by the
    counters read again (until every call sent is counted, at most SETTLE_TIMEOUT_S)."""
    sent = sum(load.done or 0 for load in loads) + probes
    cut_off = sum((load.started or 0) - (load.done or 0) for load in loads)
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        counts = scrape(url) - before
        if counts.answered >= sent or time.monotonic() > deadline:
            return Accounting(sent, cut_off, counts)
        time.sleep(0.2)
