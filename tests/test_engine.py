"""The engine: matching, replaces, unlimited, overrides, costs, statuses, headers, failure
modes. On the memory store with a fake clock, and on a Redis that is not there."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from ratelimitd.config.loader import load_config
from ratelimitd.core.engine import Engine
from ratelimitd.core.headers import HeaderMode
from ratelimitd.core.overlimit_cache import OverLimitCache
from ratelimitd.model.messages import (
    UNLIMITED_REMAINING,
    Code,
    Decision,
    Descriptor,
    InvalidRequestError,
    LimitOverride,
    Request,
    Result,
)
from ratelimitd.model.rules import Unit
from ratelimitd.storage.clock import FakeClock
from ratelimitd.storage.memory import MemoryStore
from ratelimitd.storage.redis import RedisStore
from tests.conftest import free_port

CONFIG = """
domain: api
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 3, name: tenant_default}
    descriptors:
      - key: route
        value: /search
        rate_limit: {unit: minute, requests_per_unit: 1}
  - key: tenant
    value: vip
    rate_limit:
      unit: minute
      requests_per_unit: 100
      name: vip
      replaces: [{name: global}]
  - key: global
    rate_limit: {unit: second, requests_per_unit: 1000, name: global}
  - key: internal
    rate_limit: {unlimited: true}
  - key: shadowed
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: strict
    rate_limit: {unit: hour, requests_per_unit: 1, failure_mode: deny}
  - key: bursty
    rate_limit: {unit: minute, requests_per_unit: 100, burst: 150}
  - key: api_key
    value: test-*
    share_threshold: true
    rate_limit: {unit: hour, requests_per_unit: 2}
"""

Run = Callable[[Coroutine[Any, Any, Decision]], Decision]


def desc(*pairs: str, cost: int | None = None, limit: LimitOverride | None = None) -> Descriptor:
    entries = tuple((pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2))
    return Descriptor(entries, limit, cost)


class Harness:
    def __init__(self, engine: Engine, run: Run, clock: FakeClock) -> None:
        self.engine = engine
        self.run = run
        self.clock = clock

    def decide(self, *descriptors: Descriptor, domain: str = "api", hits: int = 0) -> Decision:
        return self.run(self.engine.should_rate_limit(Request(domain, descriptors, hits)))


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "api.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(params=["no-cache", "over-limit-cache"])
def harness(config_path: Path, run: Run, request: pytest.FixtureRequest) -> Harness:
    """The engine on the memory store, without and with the local over-limit cache: every
    decision must be the same either way."""
    clock = FakeClock()
    cache = OverLimitCache(1000, clock) if request.param == "over-limit-cache" else None
    engine = Engine(load_config([config_path]), MemoryStore(clock), over_limit_cache=cache)
    return Harness(engine, run, clock)


def test_unknown_domain_is_ok_without_limits(harness: Harness) -> None:
    decision = harness.decide(desc("tenant", "a"), desc("x", "y"), domain="nope")
    assert decision.code is Code.OK
    assert [(s.code, s.rule) for s in decision.statuses] == [(Code.OK, None)] * 2
    assert decision.response_headers == ()


def test_unmatched_descriptor_is_ok_without_current_limit(harness: Harness) -> None:
    decision = harness.decide(desc("nothing", "here"))
    assert decision.statuses[0].rule is None
    assert decision.statuses[0].reset_us is None


def test_limit_then_over_limit_with_retry_after(harness: Harness) -> None:
    for expected in (2, 1, 0):
        decision = harness.decide(desc("tenant", "a"))
        assert (decision.code, decision.statuses[0].remaining) == (Code.OK, expected)
    over = harness.decide(desc("tenant", "a"))
    assert over.code is Code.OVER_LIMIT
    status = over.statuses[0]
    assert status.rule is not None
    assert status.rule.name == "tenant_default"
    assert status.reset_us == 20_000_000
    assert ("Retry-After", "20") in over.response_headers


def test_statuses_follow_request_order_and_any_over_limit_wins(harness: Harness) -> None:
    harness.decide(desc("tenant", "a", "route", "/search"))
    decision = harness.decide(
        desc("nothing", "x"), desc("tenant", "b"), desc("tenant", "a", "route", "/search")
    )
    assert [s.code for s in decision.statuses] == [Code.OK, Code.OK, Code.OVER_LIMIT]
    assert decision.code is Code.OVER_LIMIT
    # All-or-nothing: tenant b was not charged for the rejected request.
    assert harness.decide(desc("tenant", "b")).statuses[0].remaining == 2


def test_replaced_limit_is_dropped(harness: Harness) -> None:
    decision = harness.decide(desc("tenant", "vip"), desc("global", "x"))
    vip, replaced = decision.statuses
    assert vip.rule is not None
    assert vip.remaining == 99
    assert replaced.rule is None
    assert replaced.code is Code.OK
    # Without the replacing rule in the request, the global limit applies.
    assert harness.decide(desc("global", "x")).statuses[0].remaining == 999


def test_unlimited_answers_max_remaining_without_current_limit(harness: Harness) -> None:
    status = harness.decide(desc("internal", "x")).statuses[0]
    assert (status.code, status.rule, status.remaining) == (Code.OK, None, UNLIMITED_REMAINING)


def test_override_replaces_config_matching(harness: Harness) -> None:
    override = LimitOverride(2, Unit.SECOND)
    first = harness.decide(desc("tenant", "a", limit=override)).statuses[0]
    assert first.rule is not None
    assert first.rule.limit is not None
    assert (first.rule.limit.requests_per_unit, first.rule.limit.unit) == (2, Unit.SECOND)
    assert first.remaining == 1
    harness.decide(desc("tenant", "a", limit=override))
    assert harness.decide(desc("tenant", "a", limit=override)).code is Code.OVER_LIMIT
    # The configured limit's counter is separate and untouched.
    assert harness.decide(desc("tenant", "a")).statuses[0].remaining == 2
    # Unknown domain: the override does not apply either.
    assert (
        harness.decide(desc("tenant", "a", limit=override), domain="nope").statuses[0].rule is None
    )


def test_override_applies_to_descriptors_the_config_does_not_know(harness: Harness) -> None:
    status = harness.decide(desc("unknown", "x", limit=LimitOverride(5, Unit.MINUTE))).statuses[0]
    assert status.remaining == 4


def test_costs_descriptor_hits_addend_wins_and_request_zero_means_one(harness: Harness) -> None:
    assert harness.decide(desc("tenant", "a"), hits=0).statuses[0].remaining == 2
    assert harness.decide(desc("tenant", "b"), hits=2).statuses[0].remaining == 1
    assert harness.decide(desc("tenant", "c", cost=3), hits=1).statuses[0].remaining == 0
    check_only = harness.decide(desc("tenant", "d", cost=0), hits=5).statuses[0]
    assert (check_only.code, check_only.remaining) == (Code.OK, 3)


def test_shadow_rule_reports_but_never_rejects(harness: Harness) -> None:
    harness.decide(desc("shadowed", "x"))
    decision = harness.decide(desc("shadowed", "x"), desc("tenant", "a"))
    assert decision.code is Code.OK
    assert decision.statuses[0].code is Code.OK
    assert decision.statuses[0].remaining == 0
    assert decision.statuses[0].result is Result.SHADOW_OVER_LIMIT
    assert harness.decide(desc("tenant", "a")).statuses[0].remaining == 1


def test_global_shadow_mode_answers_ok_but_keeps_the_verdicts(config_path: Path, run: Run) -> None:
    engine = Engine(load_config([config_path]), MemoryStore(FakeClock()), shadow_mode=True)
    harness = Harness(engine, run, FakeClock())
    harness.decide(desc("strict", "x"))
    decision = harness.decide(desc("strict", "x"), desc("tenant", "a"))
    assert decision.code is Code.OK
    assert [s.code for s in decision.statuses] == [Code.OVER_LIMIT, Code.OK]
    assert decision.statuses[0].result is Result.SHADOW_OVER_LIMIT
    assert "Retry-After" not in dict(decision.response_headers)
    # Computed as usual: the rejected request consumed nothing.
    assert harness.decide(desc("tenant", "a")).statuses[0].remaining == 2


def test_results_within_near_and_over(harness: Harness) -> None:
    results = [harness.decide(desc("tenant", "r")).statuses[0].result for _ in range(4)]
    # 3 per minute, near when fewer than 20% of 3 (0.6) remain: only at 0.
    assert results == [
        Result.WITHIN_LIMIT,
        Result.WITHIN_LIMIT,
        Result.NEAR_LIMIT,
        Result.OVER_LIMIT,
    ]
    assert harness.decide(desc("nothing", "x")).statuses[0].result is None


def test_near_limit_ratio_is_configurable(config_path: Path, run: Run) -> None:
    engine = Engine(load_config([config_path]), MemoryStore(FakeClock()), near_limit_ratio=0.5)
    harness = Harness(engine, run, FakeClock())
    results = [harness.decide(desc("bursty", "x")).statuses[0].result for _ in range(80)]
    # Capacity 150: near once fewer than 75 remain, i.e. from the 76th hit on.
    assert results.index(Result.NEAR_LIMIT) == 75


def test_share_threshold_values_share_one_counter(harness: Harness) -> None:
    harness.decide(desc("api_key", "test-1"))
    harness.decide(desc("api_key", "test-2"))
    assert harness.decide(desc("api_key", "test-3")).code is Code.OVER_LIMIT


def test_xratelimit_headers_describe_the_tightest_limit(harness: Harness) -> None:
    decision = harness.decide(desc("tenant", "a"), desc("global", "x"))
    assert dict(decision.response_headers) == {
        "X-RateLimit-Limit": '3, 3;w=60;name="tenant_default", 1000;w=1;name="global"',
        "X-RateLimit-Remaining": "2",
        "X-RateLimit-Reset": "20",
    }


def test_xratelimit_limit_with_burst_names_capacity_and_policy(harness: Harness) -> None:
    fields = dict(harness.decide(desc("bursty", "x")).response_headers)
    assert fields["X-RateLimit-Limit"] == "150, 100;w=60;burst=150"
    assert fields["X-RateLimit-Remaining"] == "149"


def test_header_mode_none_keeps_only_retry_after(config_path: Path, run: Run) -> None:
    engine = Engine(
        load_config([config_path]), MemoryStore(FakeClock()), header_mode=HeaderMode.NONE
    )
    harness = Harness(engine, run, FakeClock())
    assert harness.decide(desc("strict", "x")).response_headers == ()
    assert harness.decide(desc("strict", "x")).response_headers == (("Retry-After", "3600"),)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (Request("", (desc("a", "b"),)), "domain"),
        (Request("api", ()), "descriptor"),
        (Request("api", (Descriptor(()),)), "no entries"),
        (Request("api", (desc("a", "b", "", "c"),)), "empty key"),
    ],
)
def test_invalid_requests_are_refused(harness: Harness, request_: Request, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        harness.run(harness.engine.should_rate_limit(request_))


def test_store_failure_applies_each_rules_failure_mode(config_path: Path, run: Run) -> None:
    dead = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    harness = Harness(Engine(load_config([config_path]), dead), run, FakeClock())
    allowed = harness.decide(desc("tenant", "a"))
    assert allowed.code is Code.OK
    assert allowed.statuses[0].rule is not None
    assert allowed.statuses[0].result is Result.FAILURE_ALLOWED
    denied = harness.decide(desc("tenant", "a"), desc("strict", "x"))
    assert [s.code for s in denied.statuses] == [Code.OK, Code.OVER_LIMIT]
    assert denied.statuses[1].result is Result.FAILURE_DENIED
    # No counter was read: no rate limit fields claiming a remaining or a reset.
    assert allowed.response_headers == ()
    assert denied.response_headers == (("Retry-After", "1"),)
    run(dead.close())  # type: ignore[arg-type]


def test_overrides_use_the_domains_default_algorithm(tmp_path: Path, run: Run) -> None:
    path = tmp_path / "gcra.yaml"
    path.write_text("domain: g\ndefaults: {algorithm: fixed_window, failure_mode: deny}\n")
    engine = Engine(load_config([path]), MemoryStore(FakeClock()))
    decision = Harness(engine, run, FakeClock()).decide(
        desc("k", "v", limit=LimitOverride(5, Unit.MINUTE)), domain="g"
    )
    rule = decision.statuses[0].rule
    assert rule is not None
    assert rule.limit is not None
    assert (rule.limit.algorithm, rule.failure_mode.value) == ("fixed_window", "deny")
