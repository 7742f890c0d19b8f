"""Per-tenant quota sections of a file (`tenant_key`, `plans`, `default_plan`, `tenants`) read
into plans and tenant specs, then expanded into the domain's tree by config/plans.py."""

from __future__ import annotations

import yaml

from ratelimitd.config import plans
from ratelimitd.config.descriptors import DescriptorReader, PlanRoot
from ratelimitd.config.yamlnodes import (
    SEQ_TAG,
    UINT32_MAX,
    Fields,
    NodeReader,
    did_you_mean,
)
from ratelimitd.model.rules import FailureMode, KeyIndex, Node, Rule, Source

QUOTA_FIELDS = ("tenant_key", "plans", "default_plan", "tenants")
PLAN_FIELDS = (
    "extends",
    "rate_limit",
    "descriptors",
    "shadow_mode",
    "quota_mode",
    "detailed_metric",
)
TENANT_FIELDS = ("plan", "overrides")
OVERRIDE_FIELDS = (
    "unit",
    "requests_per_unit",
    "burst",
    "algorithm",
    "failure_mode",
    "unlimited",
    "unit_multiplier",
)


def tenant_specs(nodes: NodeReader, node: yaml.Node | None) -> list[plans.TenantSpec]:
    """`tenants`: `<name>: <plan>`, or `<name>: {plan, overrides}`."""
    specs: list[plans.TenantSpec] = []
    if node is None:
        return specs
    if not isinstance(node, yaml.MappingNode):
        nodes.error(node, "'tenants' must be a mapping of tenant name to plan")
        return specs
    for key_node, value_node in node.value:
        name = nodes.string(key_node, "tenant name")
        if not name:
            nodes.error(key_node, "a tenant name must be a non-empty string")
            continue
        # Not nodes.source(): this runs once per tenant of a generated list.
        source = Source(nodes.file, key_node.start_mark.line + 1)
        if isinstance(value_node, yaml.ScalarNode):  # `<name>: <plan>`, the usual form
            plan, plan_source, overrides = nodes.string(value_node, "plan"), source, {}
        else:
            fields = nodes.mapping(value_node, TENANT_FIELDS, f"tenant '{name}'")
            if fields is None:
                continue
            plan_node = fields.get("plan")
            if plan_node is None:
                nodes.error(value_node, f"tenant '{name}' needs a 'plan'")
                continue
            plan, plan_source = nodes.string(plan_node, "plan"), nodes.source(plan_node)
            overrides = _overrides(nodes, fields.get("overrides"))
        specs.append(plans.TenantSpec(name, plan, source, plan_source, overrides))
    return specs


def _overrides(nodes: NodeReader, node: yaml.Node | None) -> dict[str, plans.LimitOverride]:
    """`overrides`: limit name -> the rate_limit fields to change."""
    found: dict[str, plans.LimitOverride] = {}
    for name, (key_node, fields) in nodes.named_mappings(
        node, "overrides", OVERRIDE_FIELDS
    ).items():
        unit = nodes.unit(fields["unit"], report=True) if "unit" in fields else None
        found[name] = plans.LimitOverride(
            source=nodes.source(key_node),
            unit=unit,
            requests_per_unit=nodes.integer(
                fields.get("requests_per_unit"), "requests_per_unit", 0, UINT32_MAX
            ),
            burst=nodes.integer(fields.get("burst"), "burst", 1, UINT32_MAX),
            algorithm=nodes.algorithm(fields.get("algorithm"), "") or None,
            failure_mode=(
                nodes.failure_mode(fields["failure_mode"], FailureMode.ALLOW)
                if "failure_mode" in fields
                else None
            ),
            unlimited=nodes.flag(fields, "unlimited") if "unlimited" in fields else None,
            unit_multiplier=nodes.integer(
                fields.get("unit_multiplier"), "unit_multiplier", 1, UINT32_MAX
            ),
        )
    return found


class QuotaReader:
    """Builds a domain's plans and expands its tenants into `(tenant_key, <tenant>)` nodes."""

    def __init__(
        self, descriptors: DescriptorReader, fields: Fields, domain_source: Source
    ) -> None:
        self.nodes = descriptors.nodes
        self.descriptors = descriptors
        self.fields = fields
        self.domain_source = domain_source

    def add_tenants(self, root: dict[str, KeyIndex], extra: list[plans.TenantSpec]) -> None:
        """Expand plans and tenants (the file's own, then `extra` from tenant lists) into the
        `(tenant_key, <tenant>)` nodes of `root`."""
        nodes, fields = self.nodes, self.fields
        key_node = fields.get("tenant_key")
        tenant_key = nodes.optional_string(fields, "tenant_key")
        if not tenant_key:
            nodes.error(key_node or fields["domain"], "plans and tenants need a 'tenant_key'")
            return
        if tenant_key in root and key_node is not None:
            nodes.error(
                key_node,
                f"'descriptors' already has key '{tenant_key}' at the top level; with plans, "
                "the tenant key's nodes come from the plans",
            )
            return
        built = self._plans(fields.get("plans"), tenant_key)
        specs = tenant_specs(nodes, fields.get("tenants")) + extra
        tenants = self._tenants(built, tenant_key, specs)
        default = None
        default_node = fields.get("default_plan")
        if default_node is not None:
            where = nodes.source(default_node)
            plan = self._plan_named(built, nodes.string(default_node, "default_plan"), where)
            if plan is not None:
                default = plans.default_node(tenant_key, plan, where)
        root[tenant_key] = KeyIndex(tenants, (), default)

    def _tenants(
        self,
        built: dict[str, plans.Plan | None],
        tenant_key: str,
        specs: list[plans.TenantSpec],
    ) -> dict[str, Node]:
        """Each tenant's node by name; a tenant listed twice or in error is left out."""
        tenants: dict[str, Node] = {}
        first: dict[str, Source] = {}
        for spec in specs:
            if spec.name in first:
                self.nodes.error_in(
                    spec.source, f"tenant '{spec.name}' listed twice (first at {first[spec.name]})"
                )
                continue
            first[spec.name] = spec.source
            plan = self._plan_named(built, spec.plan, spec.plan_source)
            if plan is None:
                continue
            algorithm = self.descriptors.defaults.algorithm
            try:
                node = plans.tenant_node(tenant_key, spec, plan, algorithm)
            except plans.ExpansionError as exc:
                self.nodes.error_in(exc.source, str(exc))
                continue
            tenants[spec.name] = node
            if spec.overrides:
                self.descriptors.rules.extend(plans.tenant_rules(node, plan))
        return tenants

    def _plan_named(
        self, built: dict[str, plans.Plan | None], name: str, where: Source
    ) -> plans.Plan | None:
        """The plan `name`; None after an error if unknown (or quietly if it failed)."""
        if name not in built:
            self._unknown_plan(name, list(built), where)
        return built.get(name)

    def _unknown_plan(self, name: str, known: list[str], where: Source) -> None:
        names = ", ".join(sorted(known)) or "none"
        suggestion = did_you_mean(name, known)
        self.nodes.error_in(where, f"unknown plan '{name}' (plans: {names}){suggestion}")

    def _plans(self, node: yaml.Node | None, tenant_key: str) -> dict[str, plans.Plan | None]:
        """Every plan built, `extends` resolved: a plan is its parent's limits, with its own
        rate_limit and flags in their place and its descriptors added (replacing the
        parent's of the same key and value)."""
        nodes = self.nodes
        declared = nodes.named_mappings(node, "plans", PLAN_FIELDS)
        merged: dict[str, Fields] = {}
        failed: set[str] = set()

        def resolve(name: str, chain: tuple[str, ...]) -> Fields | None:
            if name in merged or name in failed:
                return merged.get(name)
            fields = declared[name][1]
            parent_node = fields.get("extends")
            if parent_node is None:
                merged[name] = fields
                return fields
            parent = nodes.string(parent_node, "extends")
            base = None
            if parent in chain:
                cycle = " -> ".join((*chain[chain.index(parent) :], parent))
                nodes.error(parent_node, f"plans extend each other in a cycle: {cycle}")
            elif parent not in declared:
                self._unknown_plan(parent, list(declared), nodes.source(parent_node))
            else:
                base = resolve(parent, (*chain, parent))
            if base is None:
                failed.update(chain)  # reported once, here; its tenants are skipped quietly
                return None
            merged[name] = _extend(base, fields)
            return merged[name]

        built: dict[str, plans.Plan | None] = {}
        for name, (key_node, _) in declared.items():
            fields = resolve(name, (name,))
            built[name] = None if fields is None else self._plan(name, key_node, fields, tenant_key)
        return built

    def _plan(self, name: str, key_node: yaml.Node, fields: Fields, tenant_key: str) -> plans.Plan:
        """One plan's rules and subtree, under the full key `<domain>.<tenant_key>@<plan>`;
        unnamed limits are named `<plan>` (the tenant-wide one) and `<plan>.<key>_<value>`."""
        nodes = self.nodes
        root = f"{self.descriptors.domain}.{tenant_key}@{name}"
        reader = self.descriptors.for_plan(PlanRoot(name, root))
        first_rule = len(reader.rules)
        rule = None
        if "rate_limit" in fields:
            shadow = nodes.flag(fields, "shadow_mode")
            detailed = nodes.flag(fields, "detailed_metric")
            source = nodes.source(key_node)
            quota = nodes.flag(fields, "quota_mode")
            rule = reader.rule(fields["rate_limit"], root, shadow, detailed, source, quota=quota)
        children = reader.level(fields.get("descriptors"), root)
        named: dict[str, Rule] = {}
        for planned in reader.rules[first_rule:]:
            assert planned.name is not None  # plan rules are always named
            if planned.name in named:
                nodes.error_in(
                    planned.source or self.domain_source,
                    f"limit name '{planned.name}' is used twice in plan '{name}'",
                )
            named[planned.name] = planned
        return plans.Plan(name, rule, children, named, nodes.source(key_node))


def _extend(base: Fields, own: Fields) -> Fields:
    """A plan's fields over its parent's: descriptors of the same key and value replaced."""
    fields = {k: v for k, v in base.items() if k != "descriptors"} | {
        k: v for k, v in own.items() if k not in ("descriptors", "extends")
    }
    items = [*_items(base.get("descriptors")), *_items(own.get("descriptors"))]
    if items:
        by_identity = {_identity(item): item for item in items}  # the last one wins
        fields["descriptors"] = yaml.SequenceNode(SEQ_TAG, list(by_identity.values()))
    return fields


def _items(node: yaml.Node | None) -> list[yaml.Node]:
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _identity(item: yaml.Node) -> tuple[str, str]:
    """A descriptor item's (key, value) as written, for merging a plan with its parent's."""
    if not isinstance(item, yaml.MappingNode):
        return ("", str(id(item)))  # not a descriptor: kept, and reported when built
    found = {
        k.value: v.value
        for k, v in item.value
        if isinstance(k, yaml.ScalarNode) and isinstance(v, yaml.ScalarNode)
    }
    return (str(found.get("key", "")), str(found.get("value", "")))
