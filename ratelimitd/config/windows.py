"""A `rate_limit`'s window beyond its unit: `unit_multiplier` (100 per 5 minutes), and
`calendar: true` with its `timezone` (10,000 per month, reset on the 1st)."""

from __future__ import annotations

import functools
import zoneinfo

import yaml

from ratelimitd.config.burst import calendar_problem, window_problem
from ratelimitd.config.yamlnodes import UINT32_MAX, Fields, NodeReader, did_you_mean
from ratelimitd.model.rules import Unit

WINDOW_FIELDS = ("unit_multiplier", "calendar", "timezone")
CALENDAR_ALGORITHM = "fixed_window"


def read_multiplier(nodes: NodeReader, fields: Fields, unit: Unit | None) -> int:
    """`unit_multiplier` (default 1), checked against `unit`; 1 after an error."""
    node = fields.get("unit_multiplier")
    multiplier = nodes.integer(node, "unit_multiplier", 1, UINT32_MAX)
    if node is None or multiplier is None:
        return 1
    if unit is None:
        nodes.error(node, "unit_multiplier needs a 'unit'")
        return 1
    problem = window_problem(unit, multiplier)
    if problem is not None:
        nodes.error(node, problem)
        return 1
    return multiplier


def read_calendar(
    nodes: NodeReader, fields: Fields, unit: Unit | None, algorithm: str | None, default: str
) -> str | None:
    """The time zone of a `calendar: true` window (its `timezone`, else `default`, the file's);
    None for windows aligned to the epoch, or after an error. `algorithm` is the rule's own,
    None when it names none (a calendar window is then a fixed window)."""
    zone_node = fields.get("timezone")
    if not nodes.flag(fields, "calendar"):
        if zone_node is not None:
            nodes.error(zone_node, "'timezone' needs 'calendar: true'")
        return None
    zone = default if zone_node is None else read_zone(nodes, zone_node)
    if unit is None:
        nodes.error(fields["calendar"], "'calendar: true' needs a 'unit'")
        return None
    problem = calendar_problem(unit, algorithm or CALENDAR_ALGORITHM)
    if problem is not None:
        nodes.error(fields["calendar"], problem)
        return None
    return zone


def read_zone(nodes: NodeReader, node: yaml.Node) -> str | None:
    """An IANA time zone's name (`Europe/Berlin`); None after an error."""
    name = nodes.string(node, "timezone")
    if name and _known_zone(name):
        return name
    suggestion = did_you_mean(name, sorted(zoneinfo.available_timezones()))
    nodes.error(node, f"unknown timezone '{name}' (an IANA name like Europe/Berlin){suggestion}")
    return None


@functools.lru_cache(maxsize=256)
def _known_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True
