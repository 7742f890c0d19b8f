"""Per-tenant quotas: plans and tenants expanded into ordinary descriptor nodes.

A plan's limits are built once into a descriptor subtree. Each listed tenant becomes the node
`(tenant_key, <tenant>)` whose rule and children are its plan's, shared with every other
tenant of that plan (counters stay per tenant: a counter's key holds the tenant's value), so
a tenant costs one node, and looking one up is the dict lookup of any exact value. A tenant
with overrides gets its own copy of the rules it changes. Tenants not listed reach the key-only
node `(tenant_key)` with the default plan: one counter per tenant, never shared.

Plans may extend another plan; the loader resolves that before anything is built here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from ratelimitd.algorithms import ALGORITHMS
from ratelimitd.config.burst import burst_problem, calendar_problem, window_problem
from ratelimitd.model.rules import (
    FailureMode,
    KeyIndex,
    Limit,
    Node,
    Rule,
    Source,
    Unit,
)


@dataclass(frozen=True, slots=True)
class LimitOverride:
    """A tenant's changes to one limit of its plan; None leaves a field as the plan has it."""

    source: Source
    unit: Unit | None = None
    requests_per_unit: int | None = None
    burst: int | None = None
    algorithm: str | None = None
    failure_mode: FailureMode | None = None
    unlimited: bool | None = None
    unit_multiplier: int | None = None


class TenantSpec(NamedTuple):
    """One entry of `tenants`: its plan and its overrides, keyed by limit name. (A tuple:
    a generated list has a hundred thousand of them.)"""

    name: str
    plan: str
    source: Source
    plan_source: Source  # where the plan is named, for "unknown plan"
    overrides: Mapping[str, LimitOverride]


@dataclass(frozen=True, slots=True)
class Plan:
    """A plan built for one domain: the tenant-wide rule, the subtree below it, and every rule
    of the plan by name (explicit, or derived from the plan and the descriptor path)."""

    name: str
    rule: Rule | None
    children: Mapping[str, KeyIndex]
    rules: Mapping[str, Rule]
    source: Source


class ExpansionError(Exception):
    """A problem with a tenant, at the place it is declared."""

    def __init__(self, source: Source, message: str) -> None:
        super().__init__(message)
        self.source = source


def tenant_node(tenant_key: str, tenant: TenantSpec, plan: Plan, default_algorithm: str) -> Node:
    """The node `(tenant_key, tenant)`; raises ExpansionError for a bad override.
    `default_algorithm` is for an override giving a limit to what the plan leaves unlimited."""
    rule, children = plan.rule, plan.children
    if tenant.overrides:
        unknown = sorted(set(tenant.overrides) - set(plan.rules))
        if unknown:
            known = ", ".join(sorted(plan.rules)) or "none"
            raise ExpansionError(
                tenant.overrides[unknown[0]].source,
                f"tenant '{tenant.name}' overrides limit '{unknown[0]}', which plan "
                f"'{plan.name}' does not have (its limits: {known})",
            )
        replaced = {
            id(original): _overridden(
                original, tenant.overrides[name], tenant, plan.name, default_algorithm
            )
            for name, original in plan.rules.items()
            if name in tenant.overrides
        }
        rule = replaced.get(id(rule), rule) if rule is not None else None
        children = _replace_rules(children, replaced)
    return Node(tenant_key, tenant.name, rule, children, False, tenant.source)


def default_node(tenant_key: str, plan: Plan, source: Source) -> Node:
    """The key-only node `(tenant_key)` that tenants not listed reach."""
    return Node(tenant_key, None, plan.rule, plan.children, False, source)


def tenant_rules(node: Node, plan: Plan) -> list[Rule]:
    """The rules a tenant's node has of its own (its overrides), in plan order."""
    own: list[Rule] = []
    shared = {id(rule) for rule in plan.rules.values()}

    def visit(current: Node) -> None:
        if current.rule is not None and id(current.rule) not in shared:
            own.append(current.rule)
        for index in current.children.values():
            for child in _nodes(index):
                visit(child)

    visit(node)
    return own


def _nodes(index: KeyIndex) -> list[Node]:
    nodes = list(index.exact.values()) + [w.node for w in index.wildcards]
    return nodes + ([index.any_value] if index.any_value is not None else [])


def _replace_rules(
    level: Mapping[str, KeyIndex], replaced: Mapping[int, Rule]
) -> Mapping[str, KeyIndex]:
    """`level` with the rules in `replaced` (by id) swapped, copying only what changes."""
    if not replaced:
        return level

    def node(current: Node) -> Node:
        rule = current.rule
        if rule is not None:
            rule = replaced.get(id(rule), rule)
        children = _replace_rules(current.children, replaced)
        if rule is current.rule and children is current.children:
            return current
        return dataclasses.replace(current, rule=rule, children=children)

    copied = {}
    for key, index in level.items():
        exact = {value: node(child) for value, child in index.exact.items()}
        wildcards = tuple(dataclasses.replace(w, node=node(w.node)) for w in index.wildcards)
        any_value = node(index.any_value) if index.any_value is not None else None
        copied[key] = KeyIndex(exact, wildcards, any_value)
    return copied


def _overridden(
    rule: Rule, override: LimitOverride, tenant: TenantSpec, plan: str, default_algorithm: str
) -> Rule:
    """`rule` as `tenant` changes it; its full key names the tenant instead of the plan."""
    full_key = rule.full_key.replace(f"@{plan}", f"_{tenant.name}", 1)
    failure_mode = override.failure_mode or rule.failure_mode
    if override.unlimited:
        return dataclasses.replace(
            rule, full_key=full_key, limit=None, failure_mode=failure_mode, source=override.source
        )
    base = rule.limit
    unit = override.unit or (base.unit if base else None)
    per_unit = override.requests_per_unit
    if per_unit is None:
        per_unit = base.requests_per_unit if base else None
    if unit is None or per_unit is None:
        raise ExpansionError(
            override.source,
            f"tenant '{tenant.name}': limit '{rule.name}' is unlimited in its plan; an override "
            "needs 'unit' and 'requests_per_unit'",
        )
    multiplier = _multiplier(override, base, unit, tenant)
    algorithm = override.algorithm or (base.algorithm if base else default_algorithm)
    burst = override.burst
    if burst is None:
        # A burst equal to the rate follows the rate; a burst set apart from it stays (where
        # the algorithm has one).
        keeps_own = base is not None and base.burst != base.requests_per_unit
        uses_burst = ALGORITHMS[algorithm].uses_burst
        burst = base.burst if keeps_own and uses_burst and base is not None else per_unit
    if override.burst is not None or burst != per_unit:
        problem = burst_problem(burst, algorithm, per_unit, unit.seconds * multiplier)
        if problem is not None:
            raise ExpansionError(override.source, f"tenant '{tenant.name}': {problem}")
    overdraft = base.overdraft if base is not None else 0
    zone = base.calendar_zone if base is not None else None
    problem = calendar_problem(unit, algorithm) if zone is not None else None
    if problem is not None:
        raise ExpansionError(override.source, f"tenant '{tenant.name}': {problem}")
    limit = Limit(algorithm, per_unit, unit, burst, overdraft, multiplier, zone)
    return dataclasses.replace(
        rule, full_key=full_key, limit=limit, failure_mode=failure_mode, source=override.source
    )


def _multiplier(override: LimitOverride, base: Limit | None, unit: Unit, tenant: TenantSpec) -> int:
    """The overridden window's unit_multiplier: as given; else 1 where the override names a
    unit of its own (`unit: hour` means one hour), else the plan's."""
    multiplier = override.unit_multiplier
    if multiplier is None:
        multiplier = 1 if override.unit is not None or base is None else base.unit_multiplier
    problem = window_problem(unit, multiplier)
    if problem is not None:
        raise ExpansionError(override.source, f"tenant '{tenant.name}': {problem}")
    return multiplier
