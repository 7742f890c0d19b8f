"""A `rate_limit`'s window beyond its unit: `unit_multiplier` (100 per 5 minutes)."""

from __future__ import annotations

from ratelimitd.config.burst import window_problem
from ratelimitd.config.yamlnodes import UINT32_MAX, Fields, NodeReader
from ratelimitd.model.rules import Unit

WINDOW_FIELDS = ("unit_multiplier",)


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
