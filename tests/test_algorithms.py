"""Behaviour every algorithm shares, run for each algorithm against every store (memory and a
real Redis, both on a fake clock)."""

from __future__ import annotations

import pytest

from ratelimitd.algorithms import ALGORITHMS, Hit
from ratelimitd.model.rules import Unit
from tests.stores import Driver, S, limit

NAMES = sorted(ALGORITHMS)


@pytest.fixture(params=NAMES)
def algorithm(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def test_fresh_key_admits_exactly_the_limit_at_once(driver: Driver, algorithm: str) -> None:
    ten = limit(algorithm, 10)
    driver.to_window_start(Unit.MINUTE, 1)
    remaining = [driver.hit("k", ten).remaining for _ in range(10)]
    assert remaining == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    over = driver.hit("k", ten)
    assert not over.admitted
    assert over.remaining == 0
    assert over.reset_us > 0


def test_waiting_the_reported_reset_is_enough(driver: Driver, algorithm: str) -> None:
    ten = limit(algorithm, 10)
    driver.to_window_start(Unit.MINUTE, 7)
    for _ in range(10):
        driver.hit("k", ten)
    over = driver.hit("k", ten)
    assert not over.admitted
    driver.clock.advance(us=over.reset_us)
    assert driver.hit("k", ten).admitted


def test_cost_above_one(driver: Driver, algorithm: str) -> None:
    ten = limit(algorithm, 10)
    driver.to_window_start(Unit.MINUTE)
    assert (driver.hit("k", ten, 4).admitted, driver.hit("k", ten, 0).remaining) == (True, 6)
    rejected = driver.hit("k", ten, 7)
    assert (rejected.admitted, rejected.remaining) == (False, 6)
    assert driver.hit("k", ten, 6).remaining == 0


def test_cost_above_the_limit_is_never_admitted(driver: Driver, algorithm: str) -> None:
    ten = limit(algorithm, 10)
    for _ in range(3):
        assert not driver.hit("k", ten, 11).admitted
        driver.clock.advance(3600)
    assert not driver.hit("k", ten, 2**64 - 1).admitted
    assert driver.hit("k", ten).remaining == 9


def test_check_only_never_changes_state(driver: Driver, algorithm: str) -> None:
    ten = limit(algorithm, 10)
    driver.to_window_start(Unit.MINUTE)
    check = driver.hit("k", ten, 0)
    assert (check.admitted, check.remaining) == (True, 10)
    assert driver.stored_keys() == 0
    driver.hit("k", ten, 3)
    assert driver.hit("k", ten, 0).remaining == 7
    assert driver.hit("k", ten, 0).remaining == 7


def test_zero_per_unit_rejects_every_hit(driver: Driver, algorithm: str) -> None:
    closed = limit(algorithm, 0, Unit.HOUR)
    over = driver.hit("k", closed)
    assert (over.admitted, over.remaining) == (False, 0)
    assert 0 < over.reset_us <= 3600 * S
    assert not driver.hit("k", closed, 0).admitted  # a check: would a cost of 1 pass?
    assert driver.stored_keys() == 0


def test_rejected_request_consumes_nothing_from_any_limit(driver: Driver, algorithm: str) -> None:
    wide, narrow = limit(algorithm, 10), limit(algorithm, 1)
    driver.to_window_start(Unit.MINUTE)
    driver.hit("narrow", narrow)
    outcomes = driver.apply(Hit("wide", wide, 1), Hit("narrow", narrow, 1))
    assert [o.admitted for o in outcomes] == [True, False]
    assert outcomes[0].remaining == 10
    assert driver.hit("wide", wide).remaining == 9


def test_admitted_request_consumes_from_every_limit(driver: Driver, algorithm: str) -> None:
    driver.to_window_start(Unit.MINUTE)
    outcomes = driver.apply(Hit("a", limit(algorithm, 10), 2), Hit("b", limit(algorithm, 5), 1))
    assert [(o.admitted, o.remaining) for o in outcomes] == [(True, 8), (True, 4)]


def test_mixed_algorithms_in_one_request_are_all_or_nothing(driver: Driver) -> None:
    driver.to_window_start(Unit.MINUTE)
    hits = [Hit(f"k-{name}", limit(name, 10), 1) for name in NAMES]
    driver.hit("gate", limit("fixed_window", 1))
    outcomes = driver.apply(*hits, Hit("gate", limit("fixed_window", 1), 1))
    assert [o.admitted for o in outcomes] == [True] * len(NAMES) + [False]
    assert [o.remaining for o in driver.apply(*hits)] == [9] * len(NAMES)


def test_same_key_twice_in_one_request_counts_twice(driver: Driver, algorithm: str) -> None:
    two = limit(algorithm, 2)
    driver.to_window_start(Unit.MINUTE)
    outcomes = driver.apply(Hit("k", two, 1), Hit("k", two, 1), Hit("k", two, 1))
    assert [o.admitted for o in outcomes] == [True, True, False]
    outcomes = driver.apply(Hit("k", two, 1), Hit("k", two, 1))
    assert [(o.admitted, o.remaining) for o in outcomes] == [(True, 1), (True, 0)]


def test_shadow_hit_never_blocks_the_others(driver: Driver, algorithm: str) -> None:
    one, ten = limit(algorithm, 1), limit(algorithm, 10)
    driver.to_window_start(Unit.MINUTE)
    driver.apply(Hit("s", one, 1, shadow=True))
    outcomes = driver.apply(Hit("real", ten, 1), Hit("s", one, 1, shadow=True))
    assert [o.admitted for o in outcomes] == [True, False]
    assert driver.hit("real", ten).remaining == 8


def test_distinct_keys_do_not_share(driver: Driver, algorithm: str) -> None:
    one = limit(algorithm, 1)
    assert driver.hit("tenant-a", one).admitted
    assert driver.hit("tenant-b", one).admitted
    assert not driver.hit("tenant-a", one).admitted


def test_idle_key_is_fresh_again_and_its_state_expires(driver: Driver, algorithm: str) -> None:
    ten = limit(algorithm, 10)
    for _ in range(10):
        driver.hit("k", ten)
    assert driver.stored_keys() == 1
    driver.clock.advance(121)  # two whole windows: even a sliding window has forgotten
    driver.hit("other", ten, 0)  # any call lets the memory store sweep
    if driver.redis is None:
        assert driver.stored_keys() == 0
    else:
        ttl_ms = int(driver.redis.pttl(driver.redis.keys("k")[0]))
        assert 0 < ttl_ms <= 120_000  # Redis expires on its own clock
    assert driver.hit("k", ten).remaining == 9
