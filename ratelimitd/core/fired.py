"""Which limits fired: the rules a decision finds over their limit, the one binding the
client (whose wait is the Retry-After), and the name each goes by in answers."""

from __future__ import annotations

from collections.abc import Sequence

from ratelimitd.model.messages import Code, Status
from ratelimitd.model.rules import Rule


def limit_name(rule: Rule) -> str:
    """What answers call a rule: its `name`, else its full key."""
    return rule.name or rule.full_key


def fired(statuses: Sequence[Status]) -> list[Status]:
    """The statuses over their limit, in request order."""
    return [s for s in statuses if s.code is Code.OVER_LIMIT and s.rule is not None]


def binding(over: Sequence[Status]) -> Status | None:
    """Of statuses over their limit, the one the client waits longest for (the first of
    equals): retrying when it resets is retrying when every one of them has."""
    found: Status | None = None
    for status in over:
        if found is None or (status.reset_us or 0) > (found.reset_us or 0):
            found = status
    return found
