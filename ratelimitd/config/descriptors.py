"""The `descriptors:` tree of a domain (or of a plan) and the rule of each `rate_limit`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import NamedTuple

import yaml

from ratelimitd.config.burst import burst_problem
from ratelimitd.config.windows import (
    CALENDAR_ALGORITHM,
    WINDOW_FIELDS,
    read_calendar,
    read_multiplier,
    read_zone,
)
from ratelimitd.config.yamlnodes import NULL_TAG, UINT32_MAX, Fields, NodeReader
from ratelimitd.model.rules import (
    Defaults,
    FailureMode,
    KeyIndex,
    Limit,
    Node,
    Rule,
    Source,
    Unit,
    Wildcard,
    key_path,
)

DEFAULTS_FIELDS = ("algorithm", "failure_mode", "timezone")
DESCRIPTOR_FIELDS = (
    "key",
    "value",
    "rate_limit",
    "descriptors",
    "shadow_mode",
    "quota_mode",
    "detailed_metric",
    "value_to_metric",
    "share_threshold",
    "metadata",
)
RATE_LIMIT_FIELDS = (
    "unit",
    "requests_per_unit",
    "unlimited",
    "name",
    "replaces",
    "algorithm",
    "burst",
    "failure_mode",
    "overdraft",
    "max_overdraft",
    "concurrency",
    *WINDOW_FIELDS,
)
# What a rate is made of, which a concurrency limit takes the place of.
RATE_FIELDS = tuple(
    f for f in RATE_LIMIT_FIELDS if f not in ("name", "replaces", "failure_mode", "concurrency")
)
# Through Envoy a request's end is never reported, so a slot taken there could not be given back.
CONCURRENCY_WARNING = (
    "a concurrency limit is enforced by the in-app middleware (ratelimitd.middleware) only: "
    "ShouldRateLimit and ext_authz answer this descriptor as if it had no limit, since "
    "Envoy never tells them when a request ends"
)
REPLACES_FIELDS = ("name",)


def read_defaults(nodes: NodeReader, node: yaml.Node, base: Defaults) -> Defaults:
    """A file's `defaults:` block over `base` (the command line's defaults)."""
    fields = nodes.mapping(node, DEFAULTS_FIELDS, "defaults") or {}
    zone = base.timezone
    if "timezone" in fields:
        zone = read_zone(nodes, fields["timezone"]) or zone
    return replace(
        base,
        algorithm=nodes.algorithm(fields.get("algorithm"), base.algorithm),
        failure_mode=nodes.failure_mode(fields.get("failure_mode"), base.failure_mode),
        timezone=zone,
    )


@dataclass(frozen=True, slots=True)
class PlanRoot:
    """The plan whose descriptors are read, and the full key of its root: a plan's limits are
    named after it when they name themselves nothing."""

    name: str
    full_key: str


class _Naming(NamedTuple):
    """A rule's fields read alike by every kind of rule."""

    name: str | None
    replaces: frozenset[str]
    failure_mode: FailureMode


class DescriptorReader:
    """Builds descriptor trees of one domain, appending each rule to `rules` in file order."""

    def __init__(
        self,
        nodes: NodeReader,
        domain: str,
        defaults: Defaults,
        rules: list[Rule],
        plan: PlanRoot | None = None,
    ) -> None:
        self.nodes = nodes
        self.domain = domain
        self.defaults = defaults
        self.rules = rules
        self._plan = plan
        # The `descriptors:` lists being read: an alias back to one would never end.
        self._open: set[int] = set()

    def for_plan(self, plan: PlanRoot) -> DescriptorReader:
        """A reader for one plan's limits, adding to the same rules."""
        return DescriptorReader(self.nodes, self.domain, self.defaults, self.rules, plan)

    def level(self, node: yaml.Node | None, path: str) -> dict[str, KeyIndex]:
        """One `descriptors:` list below the full key `path`, indexed by key."""
        if node is None or node.tag == NULL_TAG:
            return {}
        if not isinstance(node, yaml.SequenceNode):
            self.nodes.error(node, "'descriptors' must be a list")
            return {}
        if id(node) in self._open:
            self.nodes.error(node, "'descriptors' contains itself (a recursive YAML alias)")
            return {}
        self._open.add(id(node))
        try:
            return self._level(node, path)
        finally:
            self._open.discard(id(node))

    def _level(self, node: yaml.SequenceNode, path: str) -> dict[str, KeyIndex]:
        exact: dict[str, dict[str, Node]] = {}
        wildcards: dict[str, list[Wildcard]] = {}
        any_value: dict[str, Node] = {}
        first_seen: dict[tuple[str, str | None], int] = {}
        for item in node.value:
            child = self._descriptor(item, path)
            if child is None:
                continue
            identity = (child.key, child.value)
            if identity in first_seen:
                what = child.key if child.value is None else f"{child.key}={child.value}"
                self.nodes.error(
                    item, f"duplicate descriptor {what} (first at line {first_seen[identity]})"
                )
                continue
            first_seen[identity] = child.source.line
            exact.setdefault(child.key, {})
            wildcards.setdefault(child.key, [])
            if child.value is None:
                any_value[child.key] = child
            elif "*" in child.value:
                matcher = Wildcard.compile(child.value)
                wildcards[child.key].append(Wildcard(child.value, child, matcher))
            else:
                exact[child.key][child.value] = child
        return {
            key: KeyIndex(exact[key], tuple(wildcards[key]), any_value.get(key)) for key in exact
        }

    def _descriptor(self, node: yaml.Node, path: str) -> Node | None:
        nodes = self.nodes
        fields = nodes.mapping(node, DESCRIPTOR_FIELDS, "a descriptor", reference=True)
        if fields is None:
            return None
        key = nodes.optional_string(fields, "key")
        if not key:
            nodes.error(fields.get("key") or node, "descriptor needs a non-empty 'key'")
            return None
        value = nodes.optional_string(fields, "value") or None
        full_key = f"{path}.{key_path([(key, value)])}"
        shadow = nodes.flag(fields, "shadow_mode")
        quota = nodes.flag(fields, "quota_mode")
        detailed_metric = nodes.flag(fields, "detailed_metric")
        detailed = nodes.flag(fields, "value_to_metric") or detailed_metric
        share = nodes.flag(fields, "share_threshold")
        if share and (value is None or "*" not in value):
            nodes.error(fields["share_threshold"], "share_threshold needs a wildcard value ('*')")
        rule = None
        metadata = self._metadata(fields)
        if "rate_limit" in fields:
            source = nodes.source(node)
            rule = self.rule(
                fields["rate_limit"], full_key, shadow, detailed, source, metadata, quota
            )
        if metadata and (rule is None or rule.unlimited):
            nodes.warning(
                fields["metadata"],
                "metadata without a limit (no rate_limit, or unlimited) is never "
                "sent, as in the reference: ignored",
            )
        children = self.level(fields.get("descriptors"), full_key)
        return Node(key, value, rule, children, share, nodes.source(node))

    def rule(
        self,
        node: yaml.Node,
        full_key: str,
        shadow: bool,
        detailed: bool,
        source: Source,
        metadata: Mapping[str, object] | None = None,
        quota: bool = False,
    ) -> Rule | None:
        """The rule of one `rate_limit`; its source is the descriptor's (or plan's) line, its
        `metadata` the descriptor's. None, after errors, if it has any."""
        nodes = self.nodes
        fields = nodes.mapping(node, RATE_LIMIT_FIELDS, "rate_limit", reference=True)
        if fields is None:
            return None
        if "concurrency" in fields:
            return self._concurrency_rule(fields, full_key, shadow, detailed, source, quota)
        errors_before = len(nodes.errors)
        unlimited = nodes.flag(fields, "unlimited")
        unit = self._unit(fields, node, unlimited)
        rpu = nodes.integer(fields.get("requests_per_unit"), "requests_per_unit", 0, UINT32_MAX)
        own_algorithm = nodes.algorithm(fields.get("algorithm"), "") or None
        zone = read_calendar(nodes, fields, unit, own_algorithm, self.defaults.timezone)
        algorithm = own_algorithm or (CALENDAR_ALGORITHM if zone else self.defaults.algorithm)
        multiplier = read_multiplier(nodes, fields, unit)
        window = None if unit is None else unit.seconds * multiplier
        burst = self._burst(fields, algorithm, 0 if unlimited else rpu or 0, window)
        named = self._naming(fields, full_key)
        overdraft, max_debt = self._overdraft(fields, node, unlimited or not rpu)
        if len(nodes.errors) > errors_before:
            return None
        limit = None
        if unit is not None:
            per_unit = rpu or 0
            capacity = burst if burst is not None else per_unit
            # Up to one full bucket (or window) of debt unless told otherwise.
            debt = (max_debt or capacity) if overdraft else 0
            limit = Limit(algorithm, per_unit, unit, capacity, debt, multiplier, zone)
        rule = Rule(
            domain=self.domain,
            full_key=full_key,
            limit=limit,
            name=named.name,
            replaces=named.replaces,
            shadow_mode=shadow,
            detailed_metric=detailed,
            failure_mode=named.failure_mode,
            source=source,
            metadata=metadata,
            quota_mode=quota or self.defaults.quota_mode,
        )
        self.rules.append(rule)
        return rule

    def _concurrency_rule(
        self,
        fields: Fields,
        full_key: str,
        shadow: bool,
        detailed: bool,
        source: Source,
        quota: bool,
    ) -> Rule | None:
        """A `rate_limit` of `concurrency: N`: at most N requests in flight, no rate."""
        nodes = self.nodes
        errors_before = len(nodes.errors)
        slots = nodes.integer(fields["concurrency"], "concurrency", 1, UINT32_MAX)
        for rate_field in RATE_FIELDS:
            if rate_field in fields:
                nodes.error(
                    fields[rate_field], f"'{rate_field}' does not go with 'concurrency' (a rate)"
                )
        for flag, on in (("quota_mode", quota), ("shadow_mode", shadow)):
            if on:
                nodes.error(fields["concurrency"], f"a concurrency limit takes no '{flag}'")
        named = self._naming(fields, full_key)
        if slots is None or len(nodes.errors) > errors_before:
            return None
        nodes.warning(fields["concurrency"], CONCURRENCY_WARNING)
        rule = Rule(
            domain=self.domain,
            full_key=full_key,
            limit=None,
            name=named.name,
            replaces=named.replaces,
            shadow_mode=shadow,
            detailed_metric=detailed,
            failure_mode=named.failure_mode,
            source=source,
            concurrency=slots,
        )
        self.rules.append(rule)
        return rule

    def _unit(self, fields: Fields, node: yaml.Node, unlimited: bool) -> Unit | None:
        """The `unit`, required unless `unlimited` (which excludes it)."""
        if "unit" not in fields:
            if not unlimited:
                self.nodes.error(node, "rate_limit needs a 'unit' (or 'unlimited: true')")
            return None
        unit = self.nodes.unit(fields["unit"], report=not unlimited)
        if unlimited and unit is not None:
            self.nodes.error(fields["unit"], "'unlimited: true' cannot be combined with a unit")
        return unit

    def _burst(
        self, fields: Fields, algorithm: str, per_unit: int, window: int | None
    ) -> int | None:
        """The `burst`, checked against the algorithm and the rate it bursts above."""
        burst = self.nodes.integer(fields.get("burst"), "burst", 1, UINT32_MAX)
        if burst is not None:
            problem = burst_problem(burst, algorithm, per_unit, window)
            if problem is not None:
                self.nodes.error(fields["burst"], problem)
        return burst

    def _metadata(self, fields: Fields) -> Mapping[str, object] | None:
        """A descriptor's `metadata`: a mapping of anything, sent as it is in the answer's
        dynamic metadata (with RESPONSE_DYNAMIC_METADATA)."""
        node = fields.get("metadata")
        if node is None:
            return None
        if not isinstance(node, yaml.MappingNode):
            self.nodes.error(node, "'metadata' must be a mapping")
            return None
        value = self.nodes.free_value(node, "metadata")
        return value if isinstance(value, dict) and value else None

    def _naming(self, fields: Fields, full_key: str) -> _Naming:
        """What every kind of rule reads alike: its name, the names it replaces, its failure
        mode."""
        name = self._name(fields, full_key)
        return _Naming(
            name,
            self._replaces(fields.get("replaces"), name),
            self.nodes.failure_mode(fields.get("failure_mode"), self.defaults.failure_mode),
        )

    def _name(self, fields: Fields, full_key: str) -> str | None:
        """The rule's `name`; in a plan, an unnamed limit is named after the plan and its
        path below the plan's root."""
        name = self.nodes.optional_string(fields, "name") or None
        if name is None and self._plan is not None:
            name = self._plan.name + full_key[len(self._plan.full_key) :]
        return name

    def _overdraft(self, fields: Fields, node: yaml.Node, no_rate: bool) -> tuple[bool, int | None]:
        """`overdraft` and its `max_overdraft`, if given."""
        overdraft = self.nodes.flag(fields, "overdraft")
        debt = self.nodes.integer(fields.get("max_overdraft"), "max_overdraft", 1, UINT32_MAX)
        if debt is not None and not overdraft:
            self.nodes.error(fields["max_overdraft"], "max_overdraft needs 'overdraft: true'")
        if overdraft and no_rate:
            self.nodes.error(node, "overdraft needs a limit with requests_per_unit > 0")
        return overdraft, debt

    def _replaces(self, node: yaml.Node | None, own_name: str | None) -> frozenset[str]:
        nodes = self.nodes
        if node is None or node.tag == NULL_TAG:
            return frozenset()
        if not isinstance(node, yaml.SequenceNode):
            nodes.error(node, "'replaces' must be a list of {name: ...}")
            return frozenset()
        names: set[str] = set()
        for item in node.value:
            fields = nodes.mapping(item, REPLACES_FIELDS, "a replaces entry", reference=True)
            if fields is None:
                continue
            name = nodes.optional_string(fields, "name")
            if not name:
                nodes.error(fields.get("name") or item, "replaces entry needs a non-empty 'name'")
            elif name == own_name:
                nodes.error(fields.get("name") or item, f"rule '{name}' cannot replace itself")
            else:
                names.add(name)
        return frozenset(names)
