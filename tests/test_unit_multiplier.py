"""`unit_multiplier`: windows of several units (100 per 5 minutes), for every algorithm, on
every store; and what the rest of the service makes of them (keys, headers, config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ratelimitd.algorithms import Outcome
from ratelimitd.core.headers import HeaderMode, HeaderPlan
from ratelimitd.core.keys import counter_key
from ratelimitd.model.messages import Code, Status
from ratelimitd.model.rules import FailureMode, Limit, Rule, Unit
from tests.config_files import assert_one_error, load_text, rule_at, with_rate_limit
from tests.stores import Driver, S, limit

FIVE_MINUTES = 300 * S


def test_fixed_window_of_five_minutes_aligns_to_the_epoch(driver: Driver) -> None:
    three = limit("fixed_window", 3, Unit.MINUTE, unit_multiplier=5)
    driver.clock.now_us = 5_000_000 * FIVE_MINUTES + 240 * S  # 4 minutes into a window
    assert [driver.hit("k", three).remaining for _ in range(3)] == [2, 1, 0]
    assert driver.hit("k", three) == Outcome(False, 0, 60 * S)
    driver.clock.advance(59)
    assert not driver.hit("k", three).admitted  # one minute is not the window
    driver.clock.advance(1)
    assert driver.hit("k", three) == Outcome(True, 2, FIVE_MINUTES)


def test_sliding_window_weighs_the_previous_five_minutes(driver: Driver) -> None:
    ten = limit("sliding_window", 10, Unit.MINUTE, unit_multiplier=5)
    driver.clock.now_us = 5_000_000 * FIVE_MINUTES
    for _ in range(10):
        driver.hit("k", ten)
    driver.clock.advance(300 + 60)  # previous window weighs 240/300: estimate 8
    assert driver.hit("k", ten, 0).remaining == 2


def test_token_bucket_refills_over_the_whole_window(driver: Driver) -> None:
    hundred = limit("token_bucket", 100, Unit.MINUTE, unit_multiplier=5)  # one per 3 s
    assert driver.hit("k", hundred, 100).admitted
    over = driver.hit("k", hundred)
    assert (over.admitted, over.reset_us) == (False, 3 * S)
    driver.clock.advance(3)
    assert driver.hit("k", hundred) == Outcome(True, 0, FIVE_MINUTES)


def test_gcra_interval_is_the_window_over_the_rate(driver: Driver) -> None:
    hundred = limit("gcra", 100, Unit.MINUTE, unit_multiplier=5)
    assert driver.hit("k", hundred, 100).admitted
    assert driver.hit("k", hundred) == Outcome(False, 0, 3 * S)
    driver.clock.advance(3)
    assert driver.hit("k", hundred).admitted


def test_windows_of_one_unit_never_share_a_counter() -> None:
    entries = (("user", "alice"),)
    keys = {
        counter_key("d", entries, Limit("fixed_window", 100, Unit.MINUTE, 100, 0, n), "fw")
        for n in (1, 5, 60)
    }
    assert len(keys) == 3
    one = counter_key("d", entries, Limit("fixed_window", 100, Unit.MINUTE, 100), "fw")
    assert one == "rl:{d:user=alice}:fw:100/60:100"  # unchanged by the feature


@pytest.mark.parametrize(
    ("mode", "name", "value"),
    [
        (HeaderMode.XRATELIMIT, "X-RateLimit-Limit", "100, 100;w=300"),
        (HeaderMode.IETF, "RateLimit-Policy", '"d.k";q=100;w=300'),
    ],
)
def test_headers_give_the_window_in_seconds(mode: HeaderMode, name: str, value: str) -> None:
    five = Limit("fixed_window", 100, Unit.MINUTE, 100, unit_multiplier=5)
    rule = Rule("d", "d.k", five, None, frozenset(), False, False, FailureMode.ALLOW, None)
    headers = dict(HeaderPlan([(0, rule)], mode).build([Status(Code.OK, rule, 99, S)], False))
    assert headers[name] == value


def test_config_reads_unit_multiplier_for_rules_and_overrides(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        domain: d
        tenant_key: tenant
        plans:
          free:
            rate_limit: {unit: minute, unit_multiplier: 5, requests_per_unit: 100, name: calls}
        tenants:
          acme: {plan: free, overrides: {calls: {requests_per_unit: 500}}}
          bulk: {plan: free, overrides: {calls: {unit: hour}}}
          slow: {plan: free, overrides: {calls: {unit_multiplier: 15}}}
        descriptors:
          - key: k
            rate_limit: {unit: second, unit_multiplier: 10, requests_per_unit: 1}
        """,
    )
    windows = {
        key: (lim.unit, lim.unit_multiplier)
        for key in ("d.k", "d.tenant@free", "d.tenant_acme", "d.tenant_bulk", "d.tenant_slow")
        if (lim := rule_at(config, key).limit) is not None
    }
    assert windows == {
        "d.k": (Unit.SECOND, 10),
        "d.tenant@free": (Unit.MINUTE, 5),
        "d.tenant_acme": (Unit.MINUTE, 5),  # the plan's window, a new rate
        "d.tenant_bulk": (Unit.HOUR, 1),  # a unit of its own: one hour
        "d.tenant_slow": (Unit.MINUTE, 15),
    }


@pytest.mark.parametrize(
    ("rate_limit", "fragments"),
    [
        ("{unit: minute, unit_multiplier: 0, requests_per_unit: 1}", ("between 1 and",)),
        ("{unit: minute, unit_multiplier: -3, requests_per_unit: 1}", ("between 1 and",)),
        ("{unit: minute, unit_multiplier: five, requests_per_unit: 1}", ("whole number",)),
        ("{unit: minute, unit_multiplier: 2.5, requests_per_unit: 1}", ("whole number",)),
        (
            "{unit: year, unit_multiplier: 11, requests_per_unit: 1}",
            ("longer than 10 years", "at most 10 for year"),
        ),
        ("{unlimited: true, unit_multiplier: 5}", ("unit_multiplier needs a 'unit'",)),
        (
            "{unit: day, unit_multiplier: 3650, requests_per_unit: 1, burst: 2}",
            ("burst 2 would take more than 10 years to refill",),
        ),
    ],
)
def test_bad_unit_multipliers_are_errors_at_their_line(
    tmp_path: Path, rate_limit: str, fragments: tuple[str, ...]
) -> None:
    assert_one_error(tmp_path, with_rate_limit(rate_limit), 4, fragments)


def test_an_override_window_over_ten_years_is_an_error_at_the_override(tmp_path: Path) -> None:
    text = """
        domain: d
        tenant_key: tenant
        plans:
          free: {rate_limit: {unit: year, requests_per_unit: 1, name: calls}}
        tenants:
          acme: {plan: free, overrides: {calls: {unit_multiplier: 20}}}
        """
    assert_one_error(tmp_path, text, "overrides", ("tenant 'acme'", "longer than 10 years"))
