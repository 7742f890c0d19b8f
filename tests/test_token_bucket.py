"""Token bucket behaviour, run against every store: memory and a real Redis, both driven by
a fake clock, so refill is tested exactly and without sleeping."""

from __future__ import annotations

from ratelimitd.algorithms import Hit, Outcome
from ratelimitd.model.rules import Limit, Unit
from tests.stores import Driver, S, limit


def bucket(per_unit: int, unit: Unit = Unit.MINUTE, burst: int | None = None) -> Limit:
    return limit("token_bucket", per_unit, unit, burst)


def test_full_bucket_admits_exactly_the_limit_then_rejects(driver: Driver) -> None:
    limit = bucket(10)
    remaining = [driver.hit("k", limit).remaining for _ in range(10)]
    assert remaining == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    over = driver.hit("k", limit)
    assert over == Outcome(False, 0, 6 * S)  # one token refills in 60 s / 10


def test_burst_sets_capacity_and_rate_stays_per_unit(driver: Driver) -> None:
    limit = bucket(10, burst=15)
    assert all(driver.hit("k", limit).admitted for _ in range(15))
    assert not driver.hit("k", limit).admitted
    driver.clock.advance(6)
    assert driver.hit("k", limit).admitted  # refill is 10 per minute, not 15
    assert not driver.hit("k", limit).admitted


def test_refill_is_continuous(driver: Driver) -> None:
    limit = bucket(10)
    for _ in range(10):
        driver.hit("k", limit)
    driver.clock.advance(3)  # half a token
    assert driver.hit("k", limit) == Outcome(False, 0, 3 * S)
    driver.clock.advance(3)
    assert driver.hit("k", limit).admitted
    driver.clock.advance(60)
    assert driver.hit("k", limit).remaining == 9  # refill stops at the capacity


def test_steady_rate_at_the_limit_is_always_admitted(driver: Driver) -> None:
    limit = bucket(1, Unit.SECOND)
    for _ in range(20):
        assert driver.hit("k", limit).admitted
        driver.clock.advance(1)


def test_ok_reset_is_time_until_full(driver: Driver) -> None:
    limit = bucket(10)
    assert driver.hit("k", limit, cost=3) == Outcome(True, 7, 18 * S)


def test_cost_consumes_several_tokens(driver: Driver) -> None:
    limit = bucket(10)
    assert driver.hit("k", limit, cost=4).remaining == 6
    # 7 > 6 left: rejected, nothing consumed, retry when one more token is there.
    assert driver.hit("k", limit, cost=7) == Outcome(False, 6, 6 * S)
    assert driver.hit("k", limit, cost=6) == Outcome(True, 0, 60 * S)


def test_cost_above_capacity_is_never_admitted(driver: Driver) -> None:
    limit = bucket(10)
    assert driver.hit("k", limit, cost=11) == Outcome(False, 10, 0)
    driver.clock.advance(3600)
    assert not driver.hit("k", limit, cost=11).admitted
    assert driver.hit("k", limit).remaining == 9


def test_check_only_never_changes_state(driver: Driver) -> None:
    limit = bucket(10)
    assert driver.hit("k", limit, cost=0) == Outcome(True, 10, 0)
    assert driver.stored_keys() == 0
    driver.hit("k", limit, cost=10)
    # Empty: a check is rejected until one token is back, and takes nothing meanwhile.
    assert driver.hit("k", limit, cost=0) == Outcome(False, 0, 6 * S)
    driver.clock.advance(6)
    assert driver.hit("k", limit, cost=0) == Outcome(True, 1, 54 * S)
    assert driver.hit("k", limit).admitted


def test_zero_per_unit_rejects_every_hit(driver: Driver) -> None:
    limit = bucket(0, Unit.HOUR)
    assert driver.hit("k", limit) == Outcome(False, 0, 3600 * S)
    assert not driver.hit("k", limit, cost=0).admitted
    assert driver.stored_keys() == 0


def test_all_or_nothing_rejected_request_consumes_nothing(driver: Driver) -> None:
    wide, narrow = bucket(10), bucket(1)
    driver.hit("narrow", narrow)
    outcomes = driver.apply(Hit("wide", wide, 1), Hit("narrow", narrow, 1))
    assert [o.admitted for o in outcomes] == [True, False]
    assert outcomes[0].remaining == 10  # reported untouched
    assert driver.hit("wide", wide).remaining == 9  # and really untouched


def test_admitted_request_consumes_from_every_limit(driver: Driver) -> None:
    outcomes = driver.apply(Hit("a", bucket(10), 2), Hit("b", bucket(5), 1))
    assert [(o.admitted, o.remaining) for o in outcomes] == [(True, 8), (True, 4)]


def test_same_key_twice_in_one_request_counts_twice(driver: Driver) -> None:
    limit = bucket(2)
    outcomes = driver.apply(Hit("k", limit, 1), Hit("k", limit, 1))
    assert [(o.admitted, o.remaining) for o in outcomes] == [(True, 1), (True, 0)]
    driver.clock.advance(60)
    # Three on a bucket of two: the third fails, so the whole request consumes nothing.
    outcomes = driver.apply(Hit("k", limit, 1), Hit("k", limit, 1), Hit("k", limit, 1))
    assert [o.admitted for o in outcomes] == [True, True, False]
    assert driver.hit("k", limit).remaining == 1


def test_shadow_hit_never_blocks_the_others(driver: Driver) -> None:
    shadow = bucket(1)
    driver.apply(Hit("s", shadow, 1, shadow=True))
    outcomes = driver.apply(Hit("real", bucket(10), 1), Hit("s", shadow, 1, shadow=True))
    assert [o.admitted for o in outcomes] == [True, False]
    assert driver.hit("real", bucket(10)).remaining == 8


def test_distinct_keys_do_not_share(driver: Driver) -> None:
    limit = bucket(1)
    assert driver.hit("tenant-a", limit).admitted
    assert driver.hit("tenant-b", limit).admitted
    assert not driver.hit("tenant-a", limit).admitted


def test_state_expires_once_the_bucket_is_full_again(driver: Driver) -> None:
    limit = bucket(10)
    driver.hit("k", limit, cost=2)
    assert driver.stored_keys() == 1
    if driver.redis is not None:
        # Redis expires keys on its own clock: the TTL is the refill time of 2 tokens.
        assert 11_000 < int(driver.redis.pttl(driver.redis.keys()[0])) <= 12_000
    else:
        driver.clock.advance(12)
        driver.hit("other", limit, cost=0)  # any call sweeps expired entries
        assert driver.stored_keys() == 0
    driver.clock.advance(12)
    assert driver.hit("k", limit).remaining == 9
