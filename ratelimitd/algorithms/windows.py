"""Where a window starts and ends: every `unit_us` from the Unix epoch, or, for a calendar
window (Limit.calendar_zone), at the calendar boundaries of its time zone.

A calendar window starts at local midnight of a day, a Monday (ISO weeks), the 1st of a
month or January 1st, in the rule's IANA zone, so its length follows the calendar: a day
across a DST change is 23 or 25 hours, February has 28 or 29 days. With `unit_multiplier` N,
windows are N such periods counted from year 0 (months: N = 3 gives quarters from January;
years: N = 10 gives decades). A local midnight a DST change skips starts the day at the
change; one that happens twice starts it at the first.

The Redis scripts cannot read time zones, so they are given boundaries instead: four
consecutive window starts around the replica's clock (`boundaries`), among which
lua/window.lua picks the window holding Redis' own time (docs/architecture.md).
"""

from __future__ import annotations

import datetime
import functools
from zoneinfo import ZoneInfo

from ratelimitd.model.rules import Limit, Unit

_US = 1_000_000
# Windows whose boundaries are cached: one entry per calendar (unit, multiplier, zone).
_CACHED = 1024
Boundaries = tuple[int, int, int, int]
_current: dict[tuple[Unit, int, str], Boundaries] = {}


def window(limit: Limit, now_us: int) -> tuple[int, int]:
    """Start and end, in microseconds since the epoch, of `limit`'s window holding `now_us`."""
    if limit.calendar_zone is None:
        unit_us = limit.unit_us
        start = now_us - now_us % unit_us
        return start, start + unit_us
    bounds = boundaries(limit, now_us)
    return bounds[1], bounds[2]


def boundaries(limit: Limit, now_us: int) -> Boundaries:
    """The starts of four consecutive calendar windows of `limit`: the previous window's, the
    one holding `now_us`, the next, and the end of the next (the start of the one after)."""
    assert limit.calendar_zone is not None, "only calendar windows have boundaries"
    key = (limit.unit, limit.unit_multiplier, limit.calendar_zone)
    cached = _current.get(key)
    if cached is not None and cached[1] <= now_us < cached[2]:
        return cached
    zone = _zone(limit.calendar_zone)
    n = limit.unit_multiplier
    local = datetime.datetime.fromtimestamp(now_us // _US, zone).date()
    k = _index(limit.unit, local) // n
    # A clock set back across midnight can put an instant on the local day before its window.
    while _start(limit.unit, (k + 1) * n, zone) <= now_us:
        k += 1
    while _start(limit.unit, k * n, zone) > now_us:
        k -= 1
    found = (
        _start(limit.unit, (k - 1) * n, zone),
        _start(limit.unit, k * n, zone),
        _start(limit.unit, (k + 1) * n, zone),
        _start(limit.unit, (k + 2) * n, zone),
    )
    if len(_current) >= _CACHED:
        _current.clear()
    _current[key] = found
    return found


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _index(unit: Unit, day: datetime.date) -> int:
    """The number of whole calendar `unit`s from year 0 (weeks: from the first Monday, day 1
    of the proleptic calendar) to the one holding `day`."""
    if unit is Unit.DAY:
        return day.toordinal()
    if unit is Unit.WEEK:
        return (day.toordinal() - 1) // 7
    if unit is Unit.MONTH:
        return day.year * 12 + day.month - 1
    if unit is Unit.YEAR:
        return day.year
    raise ValueError(f"no calendar {unit.name.lower()}s")


def _start(unit: Unit, index: int, zone: ZoneInfo) -> int:
    """When calendar `unit` number `index` (see _index) begins in `zone`, in microseconds."""
    if unit is Unit.DAY:
        day = datetime.date.fromordinal(index)
    elif unit is Unit.WEEK:
        day = datetime.date.fromordinal(index * 7 + 1)
    elif unit is Unit.MONTH:
        day = datetime.date(index // 12, index % 12 + 1, 1)
    else:
        day = datetime.date(index, 1, 1)
    midnight = datetime.datetime(day.year, day.month, day.day, tzinfo=zone)
    return int(midnight.timestamp()) * _US
