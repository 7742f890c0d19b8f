"""Which limit the headers describe, on every store.

- `legacy` (the reference's RateLimit-* headers): the last exceeded descriptor that is not a
  quota, else the fewest remaining, the first on ties (envoyproxy/ratelimit's choice).
- `xratelimit` and `ietf` (ours, issue 16 item 4): on a rejection the binding limit, whose wait
  is the Retry-After; otherwise the fewest remaining, the longest reset on ties.

Token buckets: 3 per minute refill one every 20 s, 5 per hour one every 720 s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from ratelimitd.config.loader import load_config
from ratelimitd.core.engine import Engine
from ratelimitd.core.headers import HeaderMode
from ratelimitd.core.problem import BodyMode
from ratelimitd.model.messages import Code, Decision, Descriptor, Request
from ratelimitd.model.rules import Config
from tests.stores import Driver

Run = Callable[[Coroutine[Any, Any, Decision]], Decision]

CONFIG = """
domain: h
descriptors:
  - key: minute
    rate_limit: {unit: minute, requests_per_unit: 3, name: per_minute}
  - key: hour
    rate_limit: {unit: hour, requests_per_unit: 5, name: per_hour}
  - key: quota_minute
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1, name: quota_minute}
  - key: quota_hour
    quota_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1, name: quota_hour}
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    path = tmp_path / "h.yaml"
    path.write_text(CONFIG)
    return load_config([path])


Decide = Callable[..., dict[str, str]]


@pytest.fixture
def make(driver: Driver, config: Config, run: Run) -> Callable[[HeaderMode], Decide]:
    """An engine on the driver's store in a header mode: `decide("minute", "hour")` sends
    one descriptor per key and answers its headers (with the code as `:code`)."""

    def build(mode: HeaderMode) -> Decide:
        engine = Engine(config, driver.store, header_mode=mode, body_mode=BodyMode.PROBLEM_JSON)

        def decide(*keys: str) -> dict[str, str]:
            descriptors = tuple(Descriptor(((key, "v"),)) for key in keys)
            decision = run(engine.should_rate_limit(Request("h", descriptors)))
            fields = dict(decision.response_headers)
            fields[":code"] = decision.code.name
            if decision.body:
                problem = json.loads(decision.body)
                fields[":retry_after_seconds"] = str(problem["retry_after_seconds"])
                fields[":fired_limit"] = problem["fired_limit"]
            return fields

        return decide

    return build


def exhaust(decide: Decide, key: str, times: int) -> None:
    for _ in range(times):
        decide(key)


def test_a_rejection_by_two_limits_describes_the_binding_one(make: Callable[..., Decide]) -> None:
    decide = make(HeaderMode.XRATELIMIT)
    exhaust(decide, "minute", 3)
    exhaust(decide, "hour", 5)
    fields = decide("minute", "hour")
    # Issue 16: Retry-After 720 came with X-RateLimit-Reset 20 (the first of two at 0).
    assert fields["Retry-After"] == fields["X-RateLimit-Reset"] == "720"
    assert fields["X-RateLimit-Limit"].startswith("5, ")
    assert fields["X-RateLimit-Remaining"] == "0"
    assert (fields[":retry_after_seconds"], fields[":fired_limit"]) == ("720", "per_hour")


def test_an_admitted_tie_describes_the_longest_reset(make: Callable[..., Decide]) -> None:
    decide = make(HeaderMode.XRATELIMIT)
    exhaust(decide, "hour", 2)
    fields = decide("minute", "hour")  # both left with 2: 20 s and 3 x 720 s to be full
    assert (fields["X-RateLimit-Remaining"], fields["X-RateLimit-Reset"]) == ("2", "2160")
    assert fields["X-RateLimit-Limit"].startswith("5, ")


def test_ietf_lists_the_binding_limit_first(make: Callable[..., Decide]) -> None:
    decide = make(HeaderMode.IETF)
    exhaust(decide, "minute", 3)
    exhaust(decide, "hour", 5)
    fields = decide("minute", "hour")
    assert fields["RateLimit"] == '"per_hour";r=0;t=720, "per_minute";r=0;t=20'
    assert fields["RateLimit-Policy"] == '"per_hour";q=5;w=3600, "per_minute";q=3;w=60'


def test_every_quota_over_waits_for_the_first_to_admit(make: Callable[..., Decide]) -> None:
    decide = make(HeaderMode.XRATELIMIT)
    decide("quota_minute")
    decide("quota_hour")
    fields = decide("quota_hour", "quota_minute")
    assert fields[":code"] == "OVER_LIMIT"
    assert fields["Retry-After"] == fields["X-RateLimit-Reset"] == "60"
    assert fields["X-RateLimit-Limit"].startswith("1, ")
    assert (fields[":retry_after_seconds"], fields[":fired_limit"]) == ("60", "quota_minute")


def test_an_exceeded_plain_limit_waits_longer_than_a_quota(make: Callable[..., Decide]) -> None:
    decide = make(HeaderMode.XRATELIMIT)
    exhaust(decide, "minute", 3)
    decide("quota_hour")
    # Rejected by per_minute; quota_hour, the only quota, is over as well: the request passes
    # once per_minute admits it and quota_hour does, so after the longer of the two waits.
    fields = decide("minute", "quota_hour")
    assert fields["Retry-After"] == fields["X-RateLimit-Reset"] == "3600"
    assert fields[":fired_limit"] == "quota_hour"


# The reference's choice (legacy)


def test_legacy_describes_the_last_exceeded_descriptor(make: Callable[..., Decide]) -> None:
    decide = make(HeaderMode.LEGACY)
    exhaust(decide, "minute", 3)
    exhaust(decide, "hour", 5)
    fields = decide("hour", "minute")
    assert (fields["RateLimit-Limit"], fields["RateLimit-Reset"]) == ("3", "20")
    assert fields["Retry-After"] == "720"


def test_legacy_skips_exceeded_quotas(make: Callable[..., Decide]) -> None:
    decide = make(HeaderMode.LEGACY)
    exhaust(decide, "minute", 3)
    decide("quota_minute")
    fields = decide("minute", "quota_minute")
    assert (fields["RateLimit-Limit"], fields["RateLimit-Remaining"]) == ("3", "0")


def test_legacy_takes_the_first_of_the_fewest_remaining(make: Callable[..., Decide]) -> None:
    decide = make(HeaderMode.LEGACY)
    exhaust(decide, "hour", 2)
    fields = decide("minute", "hour")  # both left with 2
    assert fields[":code"] == Code.OK.name
    assert (fields["RateLimit-Limit"], fields["RateLimit-Reset"]) == ("3", "20")


def test_legacy_with_only_quotas_exceeded_takes_the_fewest_remaining(
    make: Callable[..., Decide],
) -> None:
    decide = make(HeaderMode.LEGACY)
    decide("quota_minute")
    fields = decide("hour", "quota_minute", "quota_hour")
    assert fields[":code"] == Code.OK.name  # quota_hour admitted it
    assert (fields["RateLimit-Limit"], fields["RateLimit-Remaining"]) == ("1", "0")
