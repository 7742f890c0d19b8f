"""What makes a `burst` invalid, for rules written out in full and for tenants' overrides."""

from __future__ import annotations

from ratelimitd.algorithms import ALGORITHMS
from ratelimitd.model.rules import MAX_REFILL_SECONDS, Unit


def burst_problem(burst: int, algorithm: str, per_unit: int, unit: Unit | None) -> str | None:
    """Why `burst` cannot go with this limit, or None when it can."""
    known = ALGORITHMS.get(algorithm)
    if known is not None and not known.uses_burst:
        users = ", ".join(sorted(a.name for a in ALGORITHMS.values() if a.uses_burst))
        return f"burst does not apply to {algorithm} (only to {users})"
    if not per_unit:
        return "burst needs a limit with requests_per_unit > 0"
    if unit is not None and burst * unit.seconds > MAX_REFILL_SECONDS * per_unit:
        return f"burst {burst} would take more than 10 years to refill"
    return None
