"""Usage-based limits, on every store and algorithm: a check (cost 0) answers whether a cost
of 1 would pass and changes nothing; overdraft records charges past the limit, up to
max_overdraft, and later requests wait until the debt is paid back."""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from ratelimitd.algorithms import ALGORITHMS, Hit
from ratelimitd.config.errors import InvalidConfigError
from ratelimitd.config.loader import load_config
from ratelimitd.core.engine import Engine
from ratelimitd.core.overlimit_cache import OverLimitCache
from ratelimitd.model.messages import Code, Decision, Descriptor, Request
from ratelimitd.model.rules import Limit, Unit
from ratelimitd.storage.clock import FakeClock
from ratelimitd.storage.memory import MemoryStore
from tests.stores import Driver, S, assert_same, limit

Run = Callable[[Coroutine[Any, Any, Decision]], Decision]


@pytest.fixture(params=sorted(ALGORITHMS))
def algorithm(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def ten(algorithm: str, overdraft: int = 0) -> Limit:
    """10 per minute, with `overdraft` tokens of debt allowed."""
    return dataclasses.replace(limit(algorithm, 10), overdraft=overdraft)


def assert_unchanged_by(driver: Driver, *checks: Hit) -> None:
    """The checks leave every stored value, TTL and (on Redis) the write count as they were."""
    before = driver.snapshot()
    writes = driver.writes() if driver.redis is not None else 0
    driver.apply(*checks)
    assert_same(before, driver.snapshot())
    if driver.redis is not None:
        assert driver.writes() == writes


# -- checks (cost 0) ---------------------------------------------------------------------------


def test_a_check_answers_for_a_cost_of_one(driver: Driver, algorithm: str) -> None:
    driver.to_window_start(Unit.MINUTE)
    full = driver.hit("k", ten(algorithm), 0)
    assert (full.admitted, full.remaining) == (True, 10)
    assert driver.stored_keys() == 0
    driver.hit("k", ten(algorithm), 4)
    partly = driver.hit("k", ten(algorithm), 0)
    assert (partly.admitted, partly.remaining) == (True, 6)
    driver.hit("k", ten(algorithm), 6)
    exhausted = driver.hit("k", ten(algorithm), 0)
    assert (exhausted.admitted, exhausted.remaining) == (False, 0)
    assert exhausted.reset_us > 0
    driver.clock.advance(us=exhausted.reset_us - 1)
    assert not driver.hit("k", ten(algorithm), 0).admitted
    driver.clock.advance(us=1)
    assert driver.hit("k", ten(algorithm), 0).admitted
    assert driver.hit("k", ten(algorithm)).admitted  # what the check promised


def test_a_check_never_changes_stored_state(driver: Driver, algorithm: str) -> None:
    driver.to_window_start(Unit.MINUTE, 3)
    driver.hit("partly", ten(algorithm), 4)
    driver.hit("exhausted", ten(algorithm), 10)
    checks = [Hit(key, ten(algorithm), 0) for key in ("partly", "exhausted", "fresh")]
    assert_unchanged_by(driver, *checks)
    assert_unchanged_by(driver, Hit("partly", ten(algorithm, overdraft=10), 0))


def test_a_check_rejects_a_request_and_nothing_is_taken(driver: Driver, algorithm: str) -> None:
    driver.to_window_start(Unit.MINUTE)
    driver.hit("quota", ten(algorithm), 10)
    outcomes = driver.apply(Hit("requests", ten(algorithm), 1), Hit("quota", ten(algorithm), 0))
    assert [o.admitted for o in outcomes] == [True, False]
    assert driver.hit("requests", ten(algorithm), 0).remaining == 10


# -- charges past the balance -----------------------------------------------------------------


def test_without_overdraft_a_charge_above_the_balance_is_dropped(
    driver: Driver, algorithm: str
) -> None:
    driver.to_window_start(Unit.MINUTE)
    driver.hit("k", ten(algorithm), 8)
    charge = driver.hit("k", ten(algorithm), 5)
    assert (charge.admitted, charge.remaining) == (False, 2)
    assert driver.hit("k", ten(algorithm), 2).admitted  # the 5 vanished


def test_with_overdraft_a_charge_above_the_balance_is_recorded(
    driver: Driver, algorithm: str
) -> None:
    owed = ten(algorithm, overdraft=10)
    driver.to_window_start(Unit.MINUTE)
    driver.hit("k", owed, 8)
    charge = driver.hit("k", owed, 5)
    assert (charge.admitted, charge.remaining) == (False, 0)  # answered OVER_LIMIT
    check = driver.hit("k", owed, 0)
    assert (check.admitted, check.remaining) == (False, 0)
    assert check.reset_us == charge.reset_us  # the debt is in Retry-After
    driver.clock.advance(us=check.reset_us - 1)
    assert not driver.hit("k", owed, 0).admitted
    driver.clock.advance(us=1)
    assert driver.hit("k", owed).admitted


@pytest.mark.parametrize("algorithm", ["token_bucket", "gcra"])
def test_recovery_takes_the_debt_over_the_rate(driver: Driver, algorithm: str) -> None:
    # 10 per minute: a token every 6 s. 8 used, then a charge of 5: 3 tokens of debt, paid
    # back in 18 s; one more token for the next request makes 24 s.
    owed = ten(algorithm, overdraft=10)
    driver.hit("k", owed, 8)
    assert driver.hit("k", owed, 5).reset_us == 24 * S
    driver.clock.advance(18)
    assert driver.hit("k", owed, 0).reset_us == 6 * S
    driver.clock.advance(6)
    assert driver.hit("k", owed).admitted


@pytest.mark.parametrize("algorithm", ["token_bucket", "gcra"])
def test_max_overdraft_caps_the_debt(driver: Driver, algorithm: str) -> None:
    capped = ten(algorithm, overdraft=2)
    driver.hit("k", capped, 8)
    huge = driver.hit("k", capped, 2**32 - 1)
    assert huge.reset_us == 18 * S  # 2 tokens of debt and one to spend, not 4 billion
    driver.clock.advance(18)
    assert driver.hit("k", capped).admitted


def test_windows_cap_the_count_and_forget_at_the_window_end(driver: Driver) -> None:
    capped = ten("fixed_window", overdraft=2)
    driver.to_window_start(Unit.MINUTE, 30)
    driver.hit("k", capped, 9)
    assert driver.hit("k", capped, 100).reset_us == 30 * S
    driver.to_window_start(Unit.MINUTE)
    assert driver.hit("k", capped, 10).admitted


def test_sliding_window_debt_weighs_on_the_next_window(driver: Driver) -> None:
    owed = ten("sliding_window", overdraft=10)
    driver.to_window_start(Unit.MINUTE)
    driver.hit("k", owed, 8)
    charge = driver.hit("k", owed, 5)  # 13 counted in this window
    # Next window: 13 * weight + 1 <= 10 once weight <= 9/13, 18.46 s in.
    assert charge.reset_us == 60 * S + 18_461_539
    driver.clock.advance(us=charge.reset_us)
    assert driver.hit("k", owed).admitted


def test_overdraft_charges_stand_when_another_limit_rejects(driver: Driver, algorithm: str) -> None:
    owed, gate = ten(algorithm, overdraft=10), ten(algorithm)
    driver.to_window_start(Unit.MINUTE)
    driver.hit("gate", gate, 10)
    outcomes = driver.apply(Hit("usage", owed, 4), Hit("gate", gate, 1), Hit("free", gate, 3))
    assert [o.admitted for o in outcomes] == [True, False, True]
    assert outcomes[0].remaining == 6  # the charge is reported as taken...
    assert driver.hit("usage", owed, 0).remaining == 6  # ...and was
    assert driver.hit("free", gate, 0).remaining == 10  # the others took nothing


# -- config ------------------------------------------------------------------------------------


def load(tmp_path: Path, rate_limit: str) -> Limit | None:
    path = tmp_path / "u.yaml"
    path.write_text(
        textwrap.dedent(f"""
        domain: u
        descriptors:
          - key: tenant
            rate_limit: {rate_limit}
        """).lstrip("\n")
    )
    [rule] = load_config([path]).rules
    return rule.limit


def test_overdraft_defaults_to_one_bucket_of_debt(tmp_path: Path) -> None:
    plain = load(tmp_path, "{unit: minute, requests_per_unit: 100, burst: 150}")
    owed = load(tmp_path, "{unit: minute, requests_per_unit: 100, burst: 150, overdraft: true}")
    capped = load(
        tmp_path, "{unit: hour, requests_per_unit: 100, overdraft: true, max_overdraft: 7}"
    )
    assert [x.overdraft if x else None for x in (plain, owed, capped)] == [0, 150, 7]


@pytest.mark.parametrize(
    ("rate_limit", "message"),
    [
        (
            "{unit: minute, requests_per_unit: 5, max_overdraft: 3}",
            "max_overdraft needs 'overdraft: true'",
        ),
        (
            "{unit: minute, requests_per_unit: 0, overdraft: true}",
            "overdraft needs a limit with requests_per_unit > 0",
        ),
        (
            "{unlimited: true, overdraft: true}",
            "overdraft needs a limit with requests_per_unit > 0",
        ),
        (
            "{unit: minute, requests_per_unit: 5, overdraft: true, max_overdraft: 0}",
            "'max_overdraft' must be between 1",
        ),
    ],
)
def test_overdraft_config_errors(tmp_path: Path, rate_limit: str, message: str) -> None:
    with pytest.raises(InvalidConfigError) as raised:
        load(tmp_path, rate_limit)
    [error] = raised.value.errors
    assert error.line == 4
    assert message in error.message


# -- the engine --------------------------------------------------------------------------------


def test_an_overdraft_charge_is_never_answered_from_the_local_cache(
    tmp_path: Path, run: Run
) -> None:
    path = tmp_path / "u.yaml"
    path.write_text(
        "domain: u\ndescriptors:\n  - key: tenant\n    rate_limit:\n"
        "      {unit: minute, requests_per_unit: 10, overdraft: true, max_overdraft: 100}\n"
    )
    clock = FakeClock()
    engine = Engine(
        load_config([path]), MemoryStore(clock), over_limit_cache=OverLimitCache(100, clock)
    )

    def ask(cost: int) -> tuple[Code, int | None]:
        request = Request("u", (Descriptor((("tenant", "t"),), hits_addend=cost),))
        decision = run(engine.should_rate_limit(request))
        return decision.code, decision.statuses[0].reset_us

    assert ask(15)[0] is Code.OVER_LIMIT  # 5 tokens owed: the next token in 36 s
    assert ask(0) == (Code.OVER_LIMIT, 36 * S)  # a check may be answered from the cache
    assert ask(20) == (Code.OVER_LIMIT, 156 * S)  # but every charge reaches the store
    assert ask(0) == (Code.OVER_LIMIT, 156 * S)
