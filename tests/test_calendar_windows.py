"""Calendar windows (`calendar: true`): counters that reset at the calendar boundaries of a
time zone, DST and leap days included, on every store; Redis picks the window by its own
time; and the config's errors."""

from __future__ import annotations

import dataclasses
import datetime
from asyncio import AbstractEventLoop
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ratelimitd.algorithms import Hit, Outcome
from ratelimitd.core.engine import Engine
from ratelimitd.core.rule_fields import config_line, summary
from ratelimitd.model.messages import Code, Descriptor, Request
from ratelimitd.model.rules import Limit, Unit
from ratelimitd.storage.clock import FakeClock
from ratelimitd.storage.memory import MemoryStore
from ratelimitd.storage.redis import ScriptRunner, decode, encode, hit_tokens
from tests.config_files import assert_one_error, load_text, rule_at, with_rate_limit
from tests.conftest import RedisServer
from tests.stores import Driver, S, limit

HOUR = 3_600 * S
DAY = 24 * HOUR


def at(text: str, zone: str = "UTC") -> int:
    """Microseconds since the epoch of a local time `YYYY-MM-DD HH:MM:SS` in `zone`."""
    local = datetime.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))
    return int(local.timestamp()) * S


def calendar(per_unit: int, unit: Unit, zone: str = "UTC", multiplier: int = 1) -> Limit:
    """A calendar fixed window in `zone`."""
    return dataclasses.replace(
        limit("fixed_window", per_unit, unit, unit_multiplier=multiplier), calendar_zone=zone
    )


def test_a_month_resets_on_the_first(driver: Driver) -> None:
    month = calendar(3, Unit.MONTH)
    driver.clock.now_us = at("2026-01-31 23:59:50")
    assert [driver.hit("k", month).remaining for _ in range(3)] == [2, 1, 0]
    assert driver.hit("k", month) == Outcome(False, 0, 10 * S)  # Retry-After: the 1st
    driver.clock.advance(10)  # February 1st, 00:00: a fresh month of 28 days
    assert driver.hit("k", month) == Outcome(True, 2, 28 * DAY)


def test_a_day_across_dst_changes_in_berlin(driver: Driver) -> None:
    day = calendar(1, Unit.DAY, "Europe/Berlin")
    driver.clock.now_us = at("2026-03-29 00:00:00", "Europe/Berlin")  # clocks skip 02:00-03:00
    assert driver.hit("k", day) == Outcome(True, 0, 23 * HOUR)
    assert driver.hit("k", day) == Outcome(False, 0, 23 * HOUR)
    driver.clock.advance(us=23 * HOUR)  # local midnight of March 30th
    assert driver.hit("k", day) == Outcome(True, 0, 24 * HOUR)
    driver.clock.now_us = at("2026-10-25 00:00:00", "Europe/Berlin")  # 02:00-03:00 twice
    assert driver.hit("k", day) == Outcome(True, 0, 25 * HOUR)
    driver.clock.advance(us=24 * HOUR)  # 23:00 local: still October 25th
    assert driver.hit("k", day) == Outcome(False, 0, HOUR)
    driver.clock.advance(us=HOUR)
    assert driver.hit("k", day).admitted


def test_february_29th(driver: Driver) -> None:
    day, month = calendar(1, Unit.DAY), calendar(100, Unit.MONTH, "America/New_York")
    driver.clock.now_us = at("2028-02-28 23:59:59")
    assert driver.hit("d", day) == Outcome(True, 0, 1 * S)
    driver.clock.advance(1)
    assert driver.hit("d", day) == Outcome(True, 0, DAY)  # the 29th is a day of its own
    driver.clock.now_us = at("2028-02-01 00:00:00", "America/New_York")
    assert driver.hit("m", month, 100) == Outcome(True, 0, 29 * DAY)
    driver.clock.now_us = at("2028-02-29 23:59:59", "America/New_York")
    assert driver.hit("m", month) == Outcome(False, 0, 1 * S)
    driver.clock.advance(1)
    assert driver.hit("m", month).admitted


def test_a_year_resets_on_january_1st_in_its_zone(driver: Driver) -> None:
    year = calendar(2, Unit.YEAR, "Asia/Tokyo")
    driver.clock.now_us = at("2026-12-31 23:59:00", "Asia/Tokyo")  # 14:59 UTC
    assert driver.hit("k", year, 2).admitted
    assert driver.hit("k", year) == Outcome(False, 0, 60 * S)
    driver.clock.advance(60)
    assert driver.hit("k", year) == Outcome(True, 1, 365 * DAY)


def test_weeks_start_on_monday_and_multipliers_count_from_year_0(driver: Driver) -> None:
    week = calendar(1, Unit.WEEK)
    driver.clock.now_us = at("2026-12-03 10:00:00")  # a Thursday
    assert driver.hit("w", week).reset_us == at("2026-12-07 00:00:00") - driver.clock.now_us
    quarter = calendar(1, Unit.MONTH, multiplier=3)
    assert driver.hit("q", quarter).reset_us == at("2027-01-01 00:00:00") - driver.clock.now_us


def test_calendar_and_epoch_windows_never_share_a_counter(driver: Driver) -> None:
    month = calendar(1, Unit.MONTH)
    driver.clock.now_us = at("2026-12-03 10:00:00")
    assert driver.hit("k", month).admitted
    thirty_days = limit("fixed_window", 1, Unit.MONTH)
    berlin = calendar(1, Unit.MONTH, "Europe/Berlin")
    assert [driver.hit("k", x).admitted for x in (thirty_days, berlin)] == [True, True]


def test_a_planned_request_moves_on_with_the_calendar(driver: Driver) -> None:
    """The Redis stores keep a plan's script tokens; a calendar window's expire with it."""
    hits = (Hit("k", calendar(1, Unit.MONTH), 1),)
    driver.clock.now_us = at("2026-01-31 12:00:00")
    assert driver.apply_same(hits) == [Outcome(True, 0, 12 * HOUR)]
    driver.clock.now_us = at("2026-03-15 00:00:00")
    assert driver.apply_same(hits) == [Outcome(True, 0, 17 * DAY)]
    assert driver.apply_same(hits) == [Outcome(False, 0, 17 * DAY)]


def test_retry_after_and_headers_count_to_the_boundary(
    tmp_path: Path, loop: AbstractEventLoop
) -> None:
    config = load_text(
        tmp_path,
        """
        domain: billing
        defaults: {timezone: America/New_York}
        descriptors:
          - key: customer
            rate_limit: {unit: month, calendar: true, requests_per_unit: 2}
        """,
    )
    clock = FakeClock(at("2026-01-31 23:59:00", "America/New_York"))
    engine = Engine(config, MemoryStore(clock))
    request = Request("billing", (Descriptor((("customer", "acme"),)),), hits_addend=2)
    assert loop.run_until_complete(engine.should_rate_limit(request)).code is Code.OK
    decision = loop.run_until_complete(engine.should_rate_limit(request))
    assert decision.code is Code.OVER_LIMIT
    assert decision.statuses[0].reset_us == 60 * S
    headers = dict(decision.response_headers)
    assert (headers["Retry-After"], headers["X-RateLimit-Reset"]) == ("60", "60")
    assert headers["X-RateLimit-Limit"] == "2, 2;w=2592000"


# -- Redis decides the window by its own time ---------------------------------------------


@pytest.mark.parametrize(
    ("redis_time", "replica_time", "reset"),
    [
        ("2026-07-01 00:00:01", "2026-06-30 23:59:59", DAY - 1 * S),  # Redis on July 1st
        ("2026-06-30 23:59:59", "2026-07-01 00:00:01", 1 * S),  # Redis still on June 30th
    ],
)
def test_redis_picks_the_window_by_its_own_time(
    redis_server: RedisServer, redis_time: str, replica_time: str, reset: int
) -> None:
    """The replica computes the boundaries around its clock; the script's time (the
    test-only time argument, standing in for Redis TIME) decides the day."""
    client = redis_server.client()
    client.flushall()
    script = ScriptRunner(None).request
    client.script_load(script.source)
    requests = [[Hit("k", calendar(1, Unit.DAY), 1)]]
    replica_now = at(replica_time)
    keys, args = encode(requests, str(at(redis_time)), lambda hits: hit_tokens(hits, replica_now))
    reply = client.evalsha(script.sha, len(keys), *keys, *args)
    assert decode(requests, reply) == [[Outcome(True, 0, reset)]]


# -- config ----------------------------------------------------------------------------------


def test_config_reads_calendar_windows(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        domain: d
        defaults: {timezone: Europe/Berlin, algorithm: gcra}
        tenant_key: tenant
        plans:
          business:
            rate_limit: {unit: month, calendar: true, requests_per_unit: 10000, name: monthly}
        tenants:
          acme: {plan: business, overrides: {monthly: {unit: year, requests_per_unit: 100000}}}
        descriptors:
          - key: k
            rate_limit: {unit: day, calendar: true, timezone: Asia/Tokyo, requests_per_unit: 5}
          - key: epoch
            rate_limit: {unit: day, requests_per_unit: 5}
        """,
    )
    windows = {
        key: (lim.algorithm, lim.unit, lim.calendar_zone)
        for key in ("d.k", "d.epoch", "d.tenant@business", "d.tenant_acme")
        if (lim := rule_at(config, key).limit) is not None
    }
    assert windows == {
        "d.k": ("fixed_window", Unit.DAY, "Asia/Tokyo"),
        "d.epoch": ("gcra", Unit.DAY, None),
        "d.tenant@business": ("fixed_window", Unit.MONTH, "Europe/Berlin"),
        "d.tenant_acme": ("fixed_window", Unit.YEAR, "Europe/Berlin"),
    }
    line = config_line(rule_at(config, "d.k"))
    assert "algorithm=fixed_window unit=DAY" in line
    assert " calendar=Asia/Tokyo " in line
    assert summary(rule_at(config, "d.k")).startswith(
        "d.k fixed_window 5/calendar day (Asia/Tokyo)"
    )


@pytest.mark.parametrize(
    ("rate_limit", "fragments"),
    [
        *(
            (
                f"{{unit: {unit}, calendar: true, requests_per_unit: 1}}",
                ("calendar windows are day, week, month, year", f"not {unit}"),
            )
            for unit in ("second", "minute", "hour")
        ),
        (
            "{unit: day, calendar: true, timezone: Europe/Berlinn, requests_per_unit: 1}",
            ("unknown timezone 'Europe/Berlinn'", "did you mean 'Europe/Berlin'?"),
        ),
        ("{unit: day, calendar: true, timezone: /etc/passwd}", ("unknown timezone",)),
        (
            "{unit: day, timezone: UTC, requests_per_unit: 1}",
            ("'timezone' needs 'calendar: true'",),
        ),
        (
            "{unit: day, calendar: true, algorithm: token_bucket}",
            ("calendar windows are fixed windows", "token_bucket", "use fixed_window"),
        ),
        ("{unit: day, calendar: yes please}", ("'calendar' must be true or false",)),
        ("{unlimited: true, calendar: true}", ("'calendar: true' needs a 'unit'",)),
    ],
)
def test_bad_calendar_windows_are_errors_at_their_line(
    tmp_path: Path, rate_limit: str, fragments: tuple[str, ...]
) -> None:
    assert_one_error(tmp_path, with_rate_limit(rate_limit), 4, fragments)


def test_an_unknown_file_timezone_is_an_error_at_its_line(tmp_path: Path) -> None:
    text = "domain: d\ndefaults:\n  timezone: Mars/Olympus\n"
    assert_one_error(tmp_path, text, 3, ("unknown timezone 'Mars/Olympus'",))


def test_an_override_to_an_hour_of_a_calendar_limit_is_an_error(tmp_path: Path) -> None:
    text = """
        domain: d
        tenant_key: tenant
        plans:
          free: {rate_limit: {unit: month, calendar: true, requests_per_unit: 1, name: calls}}
        tenants:
          acme: {plan: free, overrides: {calls: {unit: hour}}}
        """
    assert_one_error(tmp_path, text, "overrides", ("tenant 'acme'", "not hour"))
