"""What makes a `burst` or a window (its length, a calendar's unit and algorithm) invalid,
for rules written out in full and for tenants' overrides."""

from __future__ import annotations

from ratelimitd.algorithms import ALGORITHMS
from ratelimitd.model.rules import MAX_REFILL_SECONDS, Unit


def burst_problem(
    burst: int, algorithm: str, per_unit: int, window_seconds: int | None
) -> str | None:
    """Why `burst` cannot go with this limit, or None when it can."""
    known = ALGORITHMS.get(algorithm)
    if known is not None and not known.uses_burst:
        users = ", ".join(sorted(a.name for a in ALGORITHMS.values() if a.uses_burst))
        return f"burst does not apply to {algorithm} (only to {users})"
    if not per_unit:
        return "burst needs a limit with requests_per_unit > 0"
    if window_seconds is not None and burst * window_seconds > MAX_REFILL_SECONDS * per_unit:
        return f"burst {burst} would take more than 10 years to refill"
    return None


CALENDAR_UNITS = (Unit.DAY, Unit.WEEK, Unit.MONTH, Unit.YEAR)
# The algorithms whose windows can follow a calendar (algorithms/windows.py).
CALENDAR_ALGORITHMS = ("fixed_window",)


def calendar_problem(unit: Unit, algorithm: str) -> str | None:
    """Why a calendar window cannot have this unit or algorithm, or None when it can."""
    if unit not in CALENDAR_UNITS:
        units = ", ".join(u.name.lower() for u in CALENDAR_UNITS)
        return f"calendar windows are {units}; not {unit.name.lower()}"
    if algorithm not in CALENDAR_ALGORITHMS:
        return (
            f"calendar windows are fixed windows: algorithm {algorithm} cannot have one "
            f"(use {' or '.join(CALENDAR_ALGORITHMS)}, the default with 'calendar: true')"
        )
    return None


def window_problem(unit: Unit, multiplier: int) -> str | None:
    """Why a window of `multiplier` units is too long, or None. A window is bounded as a
    bucket's refill is (10 years): that keeps every store's microsecond arithmetic exact."""
    if unit.seconds * multiplier > MAX_REFILL_SECONDS:
        most = MAX_REFILL_SECONDS // unit.seconds
        return (
            f"unit_multiplier {multiplier} makes a window longer than 10 years "
            f"(at most {most} for {unit.name.lower()})"
        )
    return None
