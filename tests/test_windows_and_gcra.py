"""What sets fixed windows, sliding windows and GCRA apart, on every store."""

from __future__ import annotations

from ratelimitd.algorithms import Outcome
from ratelimitd.model.rules import Unit
from tests.stores import Driver, S, limit

# -- fixed window -------------------------------------------------------------------------


def test_fixed_windows_align_to_the_epoch(driver: Driver) -> None:
    ten = limit("fixed_window", 10)
    driver.to_window_start(Unit.MINUTE, 59)
    for _ in range(10):
        driver.hit("k", ten)
    assert driver.hit("k", ten) == Outcome(False, 0, 1 * S)
    driver.clock.advance(1)  # the next minute of the epoch: a fresh window
    assert driver.hit("k", ten) == Outcome(True, 9, 60 * S)


def test_fixed_window_reset_is_the_window_end_for_every_unit(driver: Driver) -> None:
    for unit in Unit:
        driver.to_window_start(unit, 0.25)
        outcome = driver.hit(f"k-{unit.name}", limit("fixed_window", 5, unit))
        assert outcome == Outcome(True, 4, unit.seconds * S - 250_000)


def test_month_and_year_windows_are_30_and_365_days_from_the_epoch(driver: Driver) -> None:
    month = limit("fixed_window", 1, Unit.MONTH)
    driver.clock.now_us = 2_592_000 * S * 700 + 5 * S  # 5 s into the 701st 30-day window
    assert driver.hit("m", month).reset_us == 2_592_000 * S - 5 * S
    year = limit("fixed_window", 1, Unit.YEAR)
    driver.clock.now_us = 31_536_000 * S * 55 + 86_400 * S  # day 2 of the 56th 365-day year
    assert driver.hit("y", year).reset_us == 364 * 86_400 * S


def test_fixed_window_rejected_hits_do_not_count(driver: Driver) -> None:
    ten = limit("fixed_window", 10)
    driver.to_window_start(Unit.MINUTE)
    assert driver.hit("k", ten, 8).remaining == 2
    for _ in range(5):
        assert not driver.hit("k", ten, 5).admitted  # the reference would now count 33
    assert driver.hit("k", ten, 2) == Outcome(True, 0, 60 * S)


# -- sliding window -----------------------------------------------------------------------


def test_sliding_window_weights_the_previous_window(driver: Driver) -> None:
    ten = limit("sliding_window", 10)
    driver.to_window_start(Unit.MINUTE, 30)
    for _ in range(10):
        driver.hit("k", ten)
    driver.to_window_start(Unit.MINUTE, 15)  # previous weighs 45/60: estimate 7.5
    assert driver.hit("k", ten, 0).remaining == 2
    assert driver.hit("k", ten).admitted  # 8.5
    assert driver.hit("k", ten).admitted  # 9.5
    over = driver.hit("k", ten)  # 10.5
    assert over == Outcome(False, 0, 3 * S)  # 10*w + 2 + 1 <= 10 once w <= 0.7: at 18 s
    driver.clock.advance(3)
    assert driver.hit("k", ten).admitted
    driver.clock.advance(12)  # 30 s: previous weighs 5, current 3
    assert driver.hit("k", ten, 0).remaining == 2


def test_sliding_window_when_the_current_window_is_full_waits_into_the_next(
    driver: Driver,
) -> None:
    ten = limit("sliding_window", 10)
    driver.to_window_start(Unit.MINUTE, 50)
    for _ in range(10):
        driver.hit("k", ten)
    over = driver.hit("k", ten, 4)
    # Next window: 10 * w + 4 <= 10 once w <= 0.6, i.e. 24 s into it; now 10 s before it.
    assert over == Outcome(False, 0, 34 * S)
    driver.clock.advance(us=over.reset_us - 1)
    assert not driver.hit("k", ten, 4).admitted
    driver.clock.advance(us=1)
    assert driver.hit("k", ten, 4).admitted


def test_sliding_window_forgets_after_two_windows(driver: Driver) -> None:
    ten = limit("sliding_window", 10)
    for _ in range(10):
        driver.hit("k", ten)
    driver.clock.advance(120)
    assert driver.hit("k", ten, 0).remaining == 10


# -- GCRA ---------------------------------------------------------------------------------


def test_gcra_burst_then_one_per_interval(driver: Driver) -> None:
    ten = limit("gcra", 10)
    assert [driver.hit("k", ten).admitted for _ in range(11)] == [True] * 10 + [False]
    for _ in range(5):
        over = driver.hit("k", ten)
        assert (over.admitted, over.reset_us) == (False, 6 * S)
        driver.clock.advance(6)
        assert driver.hit("k", ten).admitted


def test_gcra_retry_after_is_exact(driver: Driver) -> None:
    ten = limit("gcra", 10)
    for _ in range(10):
        driver.hit("k", ten)
    driver.clock.advance(2.5)
    over = driver.hit("k", ten)
    assert over.reset_us == 3_500_000
    driver.clock.advance(us=over.reset_us - 1)
    assert not driver.hit("k", ten).admitted
    driver.clock.advance(us=1)
    assert driver.hit("k", ten) == Outcome(True, 0, 60 * S)


def test_gcra_burst_is_the_tolerance_in_requests(driver: Driver) -> None:
    three = limit("gcra", 10, burst=3)
    assert [driver.hit("k", three).remaining for _ in range(3)] == [2, 1, 0]
    assert not driver.hit("k", three).admitted
    driver.clock.advance(6)
    assert driver.hit("k", three).admitted  # rate stays 10 per minute


def test_gcra_fractional_interval_still_admits_the_whole_burst(driver: Driver) -> None:
    three_per_second = limit("gcra", 3, Unit.SECOND)  # 333333.3 us, rounded down
    assert [driver.hit("k", three_per_second).admitted for _ in range(4)] == [True] * 3 + [False]
    driver.clock.advance(1)
    assert [driver.hit("k", three_per_second).admitted for _ in range(4)] == [True] * 3 + [False]
