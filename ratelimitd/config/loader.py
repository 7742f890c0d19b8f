"""YAML files and directories -> a validated, immutable Config.

The format is envoyproxy/ratelimit's, unchanged, plus optional per-rule extensions
(`algorithm`, `burst`, `failure_mode`) and per-tenant quotas (`tenant_key`, `plans`,
`default_plan`, `tenants`; a file of only `domain` and `tenants` adds to another's). Every
problem is reported with its file and line, and all problems of all files are reported at
once rather than stopping at the first.
"""

from __future__ import annotations

import difflib
import gc
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from ratelimitd.algorithms import ALGORITHMS
from ratelimitd.config import plans
from ratelimitd.config.burst import burst_problem
from ratelimitd.config.errors import ConfigError, InvalidConfigError
from ratelimitd.core import extract
from ratelimitd.model.rules import (
    Config,
    Defaults,
    Domain,
    ExtractDescriptor,
    ExtractEntry,
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

CONFIG_SUFFIXES = (".yaml", ".yml")
MAX_ERRORS = 100  # reported at most, then how many more
UINT32_MAX = 2**32 - 1

_YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_BOOL_TAG = "tag:yaml.org,2002:bool"

# Per-tenant quotas (config/plans.py).
QUOTA_FIELDS = ("tenant_key", "plans", "default_plan", "tenants")
TOP_FIELDS = ("domain", "descriptors", "defaults", *QUOTA_FIELDS, "extract")
EXTRACT_FIELDS = ("entries",)
EXTRACT_ENTRY_FIELDS = ("key", *extract.SOURCES, "regex", "trusted_hops", "jwt_header")
MAX_TRUSTED_HOPS = 16
MAX_PATH_SEGMENTS = 64
# A file of only these extends the domain another file defines (a generated tenant list).
TENANT_LIST_FIELDS = ("domain", "tenants")
PLAN_FIELDS = ("extends", "rate_limit", "descriptors", "shadow_mode", "detailed_metric")
TENANT_FIELDS = ("plan", "overrides")
OVERRIDE_FIELDS = (
    "unit",
    "requests_per_unit",
    "burst",
    "algorithm",
    "failure_mode",
    "unlimited",
)
DEFAULTS_FIELDS = ("algorithm", "failure_mode")
DESCRIPTOR_FIELDS = (
    "key",
    "value",
    "rate_limit",
    "descriptors",
    "shadow_mode",
    "detailed_metric",
    "value_to_metric",
    "share_threshold",
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
)
REPLACES_FIELDS = ("name",)


def discover(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[ConfigError]]:
    """Expand files and directories into config files, in a stable order.

    Directories are walked recursively in sorted order; dot-files and dot-directories are
    skipped so a Kubernetes ConfigMap mount (with its `..data` directory) loads each file once.
    """
    files: list[Path] = []
    errors: list[ConfigError] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        resolved = path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            files.append(path)

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = []
            for root, dirs, names in os.walk(path, followlinks=True):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found += [
                    Path(root) / name
                    for name in names
                    if not name.startswith(".") and name.endswith(CONFIG_SUFFIXES)
                ]
            for file in sorted(found, key=lambda f: f.relative_to(path).parts):
                add(file)
        elif path.is_file():
            add(path)
        else:
            errors.append(ConfigError(str(path), None, "no such file or directory"))
    return files, errors


def file_hash(data: bytes) -> bytes:
    """The hash of one file's contents that ContentDigest takes."""
    return hashlib.sha256(data).digest()


class ContentDigest:
    """SHA-256 over config files' paths and contents, in load order: the same digest means the
    same files with the same bytes, so the same rules."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def add(self, path: str, content_hash: bytes) -> None:
        """Add one file: its path as discovered and the file_hash of its bytes."""
        name = os.fsencode(path)
        self._sha.update(len(name).to_bytes(8, "big") + name + content_hash)

    def hexdigest(self) -> str:
        """The digest of every file added so far."""
        return self._sha.hexdigest()


def load_config(
    paths: Sequence[str | os.PathLike[str]], defaults: Defaults | None = None
) -> Config:
    """Load and validate the config files under `paths`; raise InvalidConfigError if any fail.

    `defaults` are the command line's; a file's `defaults:` block overrides them for its rules.
    """
    # A large config creates hundreds of thousands of objects, none of them cyclic: the
    # cyclic collector would only walk them again and again (twice the load time, and pauses
    # that stall the event loop of a server reloading in a thread).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _load(paths, defaults)
    finally:
        if collecting:
            gc.enable()


def _load(paths: Sequence[str | os.PathLike[str]], defaults: Defaults | None) -> Config:
    files, errors = discover(paths)
    if not files and not errors:
        errors.append(
            ConfigError(", ".join(map(str, paths)) or "--config", None, "no config files")
        )
    parsers: list[_FileParser] = []
    digest = ContentDigest()
    for path in files:
        parser = _FileParser(str(path), defaults or Defaults())
        try:
            data = path.read_bytes()
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(ConfigError(str(path), None, f"cannot read file: {exc}"))
            continue
        digest.add(str(path), file_hash(data))
        if parser.read(text):
            parsers.append(parser)
        errors.extend(parser.errors)
    domains, rules = _build_domains(parsers, errors)
    if len(errors) > MAX_ERRORS:
        # A generated tenant list can fail on every line: the first ones say what is wrong.
        rest = errors[MAX_ERRORS:]
        errors = errors[:MAX_ERRORS]
        errors.append(ConfigError(rest[0].file, None, f"{len(rest)} more errors not shown"))
    if errors:
        raise InvalidConfigError(errors)
    return Config(
        domains=domains,
        rules=tuple(rules),
        files=tuple(str(f) for f in files),
        digest=digest.hexdigest(),
    )


def _build_domains(
    parsers: Sequence[_FileParser], errors: list[ConfigError]
) -> tuple[dict[str, Domain], list[Rule]]:
    """Each domain from the file that defines it, with the tenants of the tenant lists (files
    of only `domain` and `tenants`) for it added."""
    main: dict[str, _FileParser] = {}
    tenant_lists: dict[str, list[_FileParser]] = {}
    for parser in parsers:
        if parser.is_tenant_list:
            tenant_lists.setdefault(parser.domain, []).append(parser)
            continue
        first = main.get(parser.domain)
        if first is not None:
            errors.append(
                ConfigError(
                    parser.file,
                    parser.domain_source.line,
                    f"duplicate domain '{parser.domain}' (already defined at "
                    f"{first.domain_source})",
                )
            )
            reported = len(parser.errors)
            parser.build()  # for the errors of its own, reported all at once as always
            errors.extend(parser.errors[reported:])
            continue
        main[parser.domain] = parser
    domains: dict[str, Domain] = {}
    rules: list[Rule] = []
    for name, lists in tenant_lists.items():
        if name not in main:
            for parser in lists:
                errors.append(
                    ConfigError(
                        parser.file,
                        parser.domain_source.line,
                        f"tenants for domain '{name}', but no file defines its plans",
                    )
                )
    for name, parser in main.items():
        extra: list[plans.TenantSpec] = []
        for other in tenant_lists.get(name, ()):
            reported = len(other.errors)  # those of reading it are in already
            extra += other.tenant_specs()
            errors.extend(other.errors[reported:])
        reported = len(parser.errors)
        domains[name] = parser.build(extra)
        errors.extend(parser.errors[reported:])
        rules.extend(parser.rules)
    return domains, rules


def check_paths(paths: Sequence[str | os.PathLike[str]]) -> list[ConfigError]:
    """Validate config files and return their errors (empty when valid)."""
    try:
        load_config(paths)
    except InvalidConfigError as exc:
        return list(exc.errors)
    return []


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"'{node.value}'"


class _FileParser:
    """Builds one file's Domain from the YAML node tree, which keeps line numbers."""

    def __init__(self, file: str, defaults: Defaults) -> None:
        self.file = file
        self.defaults = defaults
        self.errors: list[ConfigError] = []
        self.rules: list[Rule] = []
        self._constructor = yaml.constructor.SafeConstructor()
        self.domain = ""
        self.domain_source = Source(file, 0)
        self._fields: dict[str, yaml.Node] = {}
        # While a plan is built: its name and the full key of its root, to name its limits.
        self._plan_root: tuple[str, str] | None = None

    def read(self, text: str) -> bool:
        """Parse the file's top level and its domain name; False (with errors) if unusable."""
        try:
            # Only the first document counts, as in the reference.
            node = next(iter(yaml.compose_all(text, Loader=_YamlLoader)), None)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or exc.context or "invalid YAML"
            self._error_at(mark.line + 1 if mark else None, f"YAML syntax error: {problem}")
            return False
        except yaml.YAMLError as exc:
            self._error_at(None, f"YAML syntax error: {exc}")
            return False
        if node is None or node.tag == _NULL_TAG:
            self._error_at(None, "empty file: expected a mapping with 'domain' and 'descriptors'")
            return False
        fields = self._mapping(node, TOP_FIELDS, "the top level")
        if fields is None:
            return False
        domain_node = fields.get("domain")
        if domain_node is None:
            self._error(node, "missing 'domain'")
            return False
        name = self._string(domain_node, "domain")
        if not name:
            if isinstance(domain_node, yaml.ScalarNode):
                self._error(domain_node, "'domain' must not be empty")
            return False
        self.domain, self.domain_source, self._fields = name, self._source(domain_node), fields
        return True

    @property
    def is_tenant_list(self) -> bool:
        """Whether the file only lists tenants of a domain another file defines."""
        return "tenants" in self._fields and set(self._fields) <= set(TENANT_LIST_FIELDS)

    def build(self, extra_tenants: Sequence[plans.TenantSpec] = ()) -> Domain:
        """The file's domain, with the tenants of other files added to its own."""
        fields, name = self._fields, self.domain
        if "defaults" in fields:
            self.defaults = self._defaults(fields["defaults"])
        root = self._level(fields.get("descriptors"), name, name)
        if extra_tenants or any(f in fields for f in QUOTA_FIELDS):
            self._add_tenants(root, list(extra_tenants))
        extraction = self._extract(fields.get("extract"))
        return Domain(name, root, self.domain_source, self.defaults, extraction)

    # -- descriptors from HTTP requests (ext_authz) ----------------------------------------

    def _extract(self, node: yaml.Node | None) -> tuple[ExtractDescriptor, ...]:
        """`extract:`, a list of descriptors, each `{entries: [...]}`."""
        if node is None:
            return ()
        if not isinstance(node, yaml.SequenceNode):
            self._error(node, "'extract' must be a list of {entries: [...]}")
            return ()
        found = []
        for item in node.value:
            fields = self._mapping(item, EXTRACT_FIELDS, "an extract descriptor")
            if fields is None:
                continue
            entries_node = fields.get("entries")
            if not isinstance(entries_node, yaml.SequenceNode) or not entries_node.value:
                self._error(entries_node or item, "an extract descriptor needs a list of 'entries'")
                continue
            entries = [self._extract_entry(entry) for entry in entries_node.value]
            if all(entries):
                found.append(ExtractDescriptor(tuple(filter(None, entries)), self._source(item)))
        return tuple(found)

    def _extract_entry(self, node: yaml.Node) -> ExtractEntry | None:
        fields = self._mapping(node, EXTRACT_ENTRY_FIELDS, "an extract entry")
        if fields is None:
            return None
        key_node = fields.get("key")
        key = self._string(key_node, "key") if key_node is not None else ""
        if not key:
            self._error(key_node or node, "an extract entry needs a non-empty 'key'")
        kinds = [kind for kind in extract.SOURCES if kind in fields]
        if len(kinds) != 1:
            self._error(
                node,
                f"an extract entry takes its value from exactly one of "
                f"{', '.join(extract.SOURCES)} (found {len(kinds)})",
            )
            return None
        kind = kinds[0]
        self._modifiers_apply(fields, kind)
        errors_before = len(self.errors)
        argument, pattern = self._extract_source(kind, fields[kind], fields)
        if not key or len(self.errors) > errors_before:
            return None
        jwt_header = fields.get("jwt_header")
        header = self._string(jwt_header, "jwt_header").lower() if jwt_header else "authorization"
        return ExtractEntry(key, kind, argument, pattern, self._source(node), header)

    def _modifiers_apply(self, fields: dict[str, yaml.Node], kind: str) -> None:
        for modifier, kinds in (
            ("regex", ("header", "jwt_claim")),
            ("trusted_hops", ("source_address",)),
            ("jwt_header", ("jwt_claim",)),
        ):
            if modifier in fields and kind not in kinds:
                self._error(fields[modifier], f"'{modifier}' applies to {' and '.join(kinds)} only")

    def _extract_source(
        self, kind: str, node: yaml.Node, fields: dict[str, yaml.Node]
    ) -> tuple[str | int, re.Pattern[str] | None]:
        """The source's argument and compiled pattern (from `path`, or a `regex`)."""
        if kind in ("method", "source_address"):
            if not self._flag(fields, kind):
                self._error(node, f"'{kind}' must be true")
            hops = self._integer(fields.get("trusted_hops"), "trusted_hops", 0, MAX_TRUSTED_HOPS)
            return hops or 0, None
        if kind == "path_segments":
            count = self._integer(node, "path_segments", 1, MAX_PATH_SEGMENTS)
            return count or 1, None
        text = self._string(node, kind)
        if not text:
            self._error(node, f"'{kind}' must be a non-empty string")
            return "", None
        if kind == "path":
            try:
                return text, extract.compile_path_template(text)
            except ValueError as exc:
                self._error(node, f"path template '{text}': {exc}")
                return "", None
        pattern = None
        if "regex" in fields:
            expression = self._string(fields["regex"], "regex")
            try:
                pattern = re.compile(expression)
            except re.error as exc:
                self._error(fields["regex"], f"regex '{expression}': {exc}")
        return (text.lower() if kind == "header" else text), pattern

    # -- plans and tenants -----------------------------------------------------------------

    def _add_tenants(self, root: dict[str, KeyIndex], extra: list[plans.TenantSpec]) -> None:
        """Expand plans and tenants into the `(tenant_key, <tenant>)` nodes of `root`."""
        fields = self._fields
        key_node = fields.get("tenant_key")
        tenant_key = self._string(key_node, "tenant_key") if key_node is not None else ""
        if not tenant_key:
            self._error(key_node or fields["domain"], "plans and tenants need a 'tenant_key'")
            return
        if tenant_key in root and key_node is not None:
            self._error(
                key_node,
                f"'descriptors' already has key '{tenant_key}' at the top level; with plans, "
                "the tenant key's nodes come from the plans",
            )
            return
        built = self._plans(fields.get("plans"), tenant_key)
        tenants: dict[str, Node] = {}
        first: dict[str, Source] = {}
        for spec in self.tenant_specs() + extra:
            if spec.name in first:
                self._error_in(
                    spec.source, f"tenant '{spec.name}' listed twice (first at {first[spec.name]})"
                )
                continue
            first[spec.name] = spec.source
            plan = self._plan_named(built, spec.plan, spec.plan_source)
            if plan is None:
                continue
            try:
                node = plans.tenant_node(tenant_key, spec, plan, self.defaults.algorithm)
            except plans.ExpansionError as exc:
                self._error_in(exc.source, str(exc))
                continue
            tenants[spec.name] = node
            if spec.overrides:
                self.rules.extend(plans.tenant_rules(node, plan))
        default = None
        default_node = fields.get("default_plan")
        if default_node is not None:
            plan = self._plan_named(
                built, self._string(default_node, "default_plan"), self._source(default_node)
            )
            if plan is not None:
                default = plans.default_node(tenant_key, plan, self._source(default_node))
        root[tenant_key] = KeyIndex(tenants, (), default)

    def _plan_named(
        self, built: dict[str, plans.Plan | None], name: str, where: Source
    ) -> plans.Plan | None:
        """The plan `name`; None after an error if unknown (or quietly if it failed)."""
        if name not in built:
            self._unknown_plan(name, list(built), where)
        return built.get(name)

    def _unknown_plan(self, name: str, known: list[str], where: Source) -> None:
        hint = difflib.get_close_matches(name, known, n=1)
        suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
        names = ", ".join(sorted(known)) or "none"
        self._error_in(where, f"unknown plan '{name}' (plans: {names}){suggestion}")

    def _plans(self, node: yaml.Node | None, tenant_key: str) -> dict[str, plans.Plan | None]:
        """Every plan built, `extends` resolved: a plan is its parent's limits, with its own
        rate_limit and flags in their place and its descriptors added (replacing the
        parent's of the same key and value)."""
        declared = self._named_mappings(node, "plans", PLAN_FIELDS)
        merged: dict[str, dict[str, yaml.Node]] = {}
        failed: set[str] = set()

        def resolve(name: str, chain: tuple[str, ...]) -> dict[str, yaml.Node] | None:
            if name in merged or name in failed:
                return merged.get(name)
            fields = declared[name][1]
            parent_node = fields.get("extends")
            if parent_node is None:
                merged[name] = fields
                return fields
            parent = self._string(parent_node, "extends")
            base = None
            if parent in chain:
                cycle = " -> ".join((*chain[chain.index(parent) :], parent))
                self._error(parent_node, f"plans extend each other in a cycle: {cycle}")
            elif parent not in declared:
                self._unknown_plan(parent, list(declared), self._source(parent_node))
            else:
                base = resolve(parent, (*chain, parent))
            if base is None:
                failed.update(chain)  # reported once, here; its tenants are skipped quietly
                return None
            merged[name] = self._extend(base, fields)
            return merged[name]

        built: dict[str, plans.Plan | None] = {}
        for name, (key_node, _) in declared.items():
            fields = resolve(name, (name,))
            built[name] = None if fields is None else self._plan(name, key_node, fields, tenant_key)
        return built

    def _extend(
        self, base: dict[str, yaml.Node], own: dict[str, yaml.Node]
    ) -> dict[str, yaml.Node]:
        fields = {k: v for k, v in base.items() if k != "descriptors"} | {
            k: v for k, v in own.items() if k not in ("descriptors", "extends")
        }
        items = [*_items(base.get("descriptors")), *_items(own.get("descriptors"))]
        if items:
            by_identity = {_identity(item): item for item in items}  # the last one wins
            fields["descriptors"] = yaml.SequenceNode(
                "tag:yaml.org,2002:seq", list(by_identity.values())
            )
        return fields

    def _plan(
        self, name: str, key_node: yaml.Node, fields: dict[str, yaml.Node], tenant_key: str
    ) -> plans.Plan:
        """One plan's rules and subtree, under the full key `<domain>.<tenant_key>@<plan>`;
        unnamed limits are named `<plan>` (the tenant-wide one) and `<plan>.<key>_<value>`."""
        root = f"{self.domain}.{tenant_key}@{name}"
        first_rule = len(self.rules)
        self._plan_root = (name, root)
        try:
            rule = None
            if "rate_limit" in fields:
                shadow = self._flag(fields, "shadow_mode")
                detailed = self._flag(fields, "detailed_metric")
                rule = self._rule(
                    fields["rate_limit"],
                    self.domain,
                    root,
                    shadow,
                    detailed,
                    self._source(key_node),
                )
            children = self._level(fields.get("descriptors"), self.domain, root)
        finally:
            self._plan_root = None
        named: dict[str, Rule] = {}
        for planned in self.rules[first_rule:]:
            assert planned.name is not None  # plan rules are always named
            if planned.name in named:
                self._error_in(
                    planned.source or self.domain_source,
                    f"limit name '{planned.name}' is used twice in plan '{name}'",
                )
            named[planned.name] = planned
        return plans.Plan(name, rule, children, named, self._source(key_node))

    def tenant_specs(self) -> list[plans.TenantSpec]:
        """The file's `tenants`: `<name>: <plan>`, or `<name>: {plan, overrides}`."""
        node = self._fields.get("tenants")
        specs: list[plans.TenantSpec] = []
        if node is None:
            return specs
        if not isinstance(node, yaml.MappingNode):
            self._error(node, "'tenants' must be a mapping of tenant name to plan")
            return specs
        for key_node, value_node in node.value:
            name = self._string(key_node, "tenant name")
            if not name:
                self._error(key_node, "a tenant name must be a non-empty string")
                continue
            source = Source(self.file, key_node.start_mark.line + 1)
            if isinstance(value_node, yaml.ScalarNode):  # `<name>: <plan>`, the usual form
                plan, plan_source, overrides = self._string(value_node, "plan"), source, {}
            else:
                fields = self._mapping(value_node, TENANT_FIELDS, f"tenant '{name}'")
                if fields is None:
                    continue
                plan_node = fields.get("plan")
                if plan_node is None:
                    self._error(value_node, f"tenant '{name}' needs a 'plan'")
                    continue
                plan, plan_source = self._string(plan_node, "plan"), self._source(plan_node)
                overrides = self._overrides(fields.get("overrides"))
            specs.append(plans.TenantSpec(name, plan, source, plan_source, overrides))
        return specs

    def _overrides(self, node: yaml.Node | None) -> dict[str, plans.LimitOverride]:
        """`overrides`: limit name -> the rate_limit fields to change."""
        found: dict[str, plans.LimitOverride] = {}
        for name, (key_node, fields) in self._named_mappings(
            node, "overrides", OVERRIDE_FIELDS
        ).items():
            unit = self._unit(fields["unit"], report=True) if "unit" in fields else None
            found[name] = plans.LimitOverride(
                source=self._source(key_node),
                unit=unit,
                requests_per_unit=self._integer(
                    fields.get("requests_per_unit"), "requests_per_unit", 0, UINT32_MAX
                ),
                burst=self._integer(fields.get("burst"), "burst", 1, UINT32_MAX),
                algorithm=self._algorithm(fields.get("algorithm"), "") or None,
                failure_mode=(
                    self._failure_mode(fields["failure_mode"], FailureMode.ALLOW)
                    if "failure_mode" in fields
                    else None
                ),
                unlimited=self._flag(fields, "unlimited") if "unlimited" in fields else None,
            )
        return found

    def _named_mappings(
        self, node: yaml.Node | None, what: str, allowed: Sequence[str]
    ) -> dict[str, tuple[yaml.Node, dict[str, yaml.Node]]]:
        """A mapping of names to mappings of `allowed` fields, e.g. `plans`."""
        found: dict[str, tuple[yaml.Node, dict[str, yaml.Node]]] = {}
        if node is None:
            return found
        if not isinstance(node, yaml.MappingNode):
            self._error(node, f"'{what}' must be a mapping of names")
            return found
        for key_node, value_node in node.value:
            name = self._string(key_node, f"a name in {what}")
            if not name:
                continue
            if name in found:
                line = found[name][0].start_mark.line + 1
                self._error(key_node, f"duplicate {what} entry '{name}' (first at line {line})")
                continue
            fields = self._mapping(value_node, allowed, f"{what} '{name}'")
            if fields is not None:
                found[name] = (key_node, fields)
        return found

    def _defaults(self, node: yaml.Node) -> Defaults:
        """The file's `defaults:` block over the command line's defaults."""
        fields = self._mapping(node, DEFAULTS_FIELDS, "defaults") or {}
        return replace(
            self.defaults,
            algorithm=self._algorithm(fields.get("algorithm"), self.defaults.algorithm),
            failure_mode=self._failure_mode(fields.get("failure_mode"), self.defaults.failure_mode),
        )

    # -- descriptor tree -------------------------------------------------------------------

    def _level(self, node: yaml.Node | None, domain: str, path: str) -> dict[str, KeyIndex]:
        if node is None or node.tag == _NULL_TAG:
            return {}
        if not isinstance(node, yaml.SequenceNode):
            self._error(node, "'descriptors' must be a list")
            return {}
        exact: dict[str, dict[str, Node]] = {}
        wildcards: dict[str, list[Wildcard]] = {}
        any_value: dict[str, Node] = {}
        first_seen: dict[tuple[str, str | None], int] = {}
        for item in node.value:
            child = self._descriptor(item, domain, path)
            if child is None:
                continue
            identity = (child.key, child.value)
            if identity in first_seen:
                what = child.key if child.value is None else f"{child.key}={child.value}"
                self._error(
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

    def _descriptor(self, node: yaml.Node, domain: str, path: str) -> Node | None:
        fields = self._mapping(node, DESCRIPTOR_FIELDS, "a descriptor")
        if fields is None:
            return None
        key_node = fields.get("key")
        key = self._string(key_node, "key") if key_node is not None else ""
        if not key:
            self._error(key_node or node, "descriptor needs a non-empty 'key'")
            return None
        value_node = fields.get("value")
        value = (self._string(value_node, "value") if value_node is not None else "") or None
        full_key = f"{path}.{key_path([(key, value)])}"
        shadow = self._flag(fields, "shadow_mode")
        detailed_metric = self._flag(fields, "detailed_metric")
        detailed = self._flag(fields, "value_to_metric") or detailed_metric
        share = self._flag(fields, "share_threshold")
        if share and (value is None or "*" not in value):
            self._error(fields["share_threshold"], "share_threshold needs a wildcard value ('*')")
        rule = None
        if "rate_limit" in fields:
            source = self._source(node)
            rule = self._rule(fields["rate_limit"], domain, full_key, shadow, detailed, source)
        children = self._level(fields.get("descriptors"), domain, full_key)
        return Node(key, value, rule, children, share, self._source(node))

    def _rule(
        self,
        node: yaml.Node,
        domain: str,
        full_key: str,
        shadow: bool,
        detailed: bool,
        source: Source,
    ) -> Rule | None:
        """The rule of one descriptor's `rate_limit`; its source is the descriptor's line."""
        fields = self._mapping(node, RATE_LIMIT_FIELDS, "rate_limit")
        if fields is None:
            return None
        errors_before = len(self.errors)
        unlimited = self._flag(fields, "unlimited")
        unit = None
        if "unit" in fields:
            unit = self._unit(fields["unit"], report=not unlimited)
            if unlimited and unit is not None:
                self._error(fields["unit"], "'unlimited: true' cannot be combined with a unit")
        elif not unlimited:
            self._error(node, "rate_limit needs a 'unit' (or 'unlimited: true')")
        rpu = self._integer(fields.get("requests_per_unit"), "requests_per_unit", 0, UINT32_MAX)
        algorithm = self._algorithm(fields.get("algorithm"), self.defaults.algorithm)
        burst = self._integer(fields.get("burst"), "burst", 1, UINT32_MAX)
        if burst is not None:
            self._check_burst(fields["burst"], burst, algorithm, rpu or 0, unit, unlimited)
        name_node = fields.get("name")
        name = (self._string(name_node, "name") if name_node is not None else "") or None
        if name is None and self._plan_root is not None:
            plan, root = self._plan_root
            name = plan + full_key[len(root) :]
        replaces = self._replaces(fields.get("replaces"), name)
        failure_mode = self._failure_mode(fields.get("failure_mode"), self.defaults.failure_mode)
        overdraft, max_debt = self._overdraft(fields, node, unlimited or not rpu)
        if len(self.errors) > errors_before:
            return None
        limit = None
        if unit is not None:
            per_unit = rpu or 0
            capacity = burst if burst is not None else per_unit
            # Up to one full bucket (or window) of debt unless told otherwise.
            debt = (max_debt or capacity) if overdraft else 0
            limit = Limit(algorithm, per_unit, unit, capacity, debt)
        rule = Rule(
            domain=domain,
            full_key=full_key,
            limit=limit,
            name=name,
            replaces=replaces,
            shadow_mode=shadow,
            detailed_metric=detailed,
            failure_mode=failure_mode,
            source=source,
        )
        self.rules.append(rule)
        return rule

    def _overdraft(
        self, fields: dict[str, yaml.Node], node: yaml.Node, no_rate: bool
    ) -> tuple[bool, int | None]:
        """`overdraft` and its `max_overdraft`, if given."""
        overdraft = self._flag(fields, "overdraft")
        debt = self._integer(fields.get("max_overdraft"), "max_overdraft", 1, UINT32_MAX)
        if debt is not None and not overdraft:
            self._error(fields["max_overdraft"], "max_overdraft needs 'overdraft: true'")
        if overdraft and no_rate:
            self._error(node, "overdraft needs a limit with requests_per_unit > 0")
        return overdraft, debt

    def _check_burst(
        self,
        node: yaml.Node,
        burst: int,
        algorithm: str,
        per_unit: int,
        unit: Unit | None,
        unlimited: bool,
    ) -> None:
        problem = burst_problem(burst, algorithm, 0 if unlimited else per_unit, unit)
        if problem is not None:
            self._error(node, problem)

    def _algorithm(self, node: yaml.Node | None, default: str) -> str:
        if node is None:
            return default
        return self._choice(node, "algorithm", sorted(ALGORITHMS)) or default

    def _failure_mode(self, node: yaml.Node | None, default: FailureMode) -> FailureMode:
        if node is None:
            return default
        mode = self._choice(node, "failure_mode", [m.value for m in FailureMode])
        return FailureMode(mode) if mode else default

    def _replaces(self, node: yaml.Node | None, own_name: str | None) -> frozenset[str]:
        if node is None or node.tag == _NULL_TAG:
            return frozenset()
        if not isinstance(node, yaml.SequenceNode):
            self._error(node, "'replaces' must be a list of {name: ...}")
            return frozenset()
        names: set[str] = set()
        for item in node.value:
            fields = self._mapping(item, REPLACES_FIELDS, "a replaces entry")
            if fields is None:
                continue
            name_node = fields.get("name")
            name = self._string(name_node, "name") if name_node is not None else ""
            if not name:
                self._error(name_node or item, "replaces entry needs a non-empty 'name'")
            elif name == own_name:
                self._error(name_node or item, f"rule '{name}' cannot replace itself")
            else:
                names.add(name)
        return frozenset(names)

    # -- scalars ---------------------------------------------------------------------------

    def _mapping(
        self, node: yaml.Node, allowed: Sequence[str], where: str
    ) -> dict[str, yaml.Node] | None:
        if not isinstance(node, yaml.MappingNode):
            self._error(node, f"{where} must be a mapping")
            return None
        fields: dict[str, yaml.Node] = {}
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR_TAG:
                self._error(key_node, f"keys in {where} must be strings")
                continue
            name = key_node.value
            if name not in allowed:
                hint = difflib.get_close_matches(name, allowed, n=1)
                suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
                self._error(key_node, f"unknown key '{name}' in {where}{suggestion}")
            elif name in lines:
                self._error(key_node, f"duplicate key '{name}' (first at line {lines[name]})")
            else:
                lines[name] = key_node.start_mark.line + 1
                # A null value (`key: ~` or `key:`) counts as absent, as in the reference.
                if value_node.tag != _NULL_TAG:
                    fields[name] = value_node
        return fields

    def _string(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode):
            self._error(node, f"'{what}' must be a string")
            return ""
        # Scalars are read as written, so `value: 123` is "123" as in the reference.
        return "" if node.tag == _NULL_TAG else str(node.value)

    def _integer(self, node: yaml.Node | None, what: str, minimum: int, maximum: int) -> int | None:
        if node is None:
            return None
        if isinstance(node, yaml.ScalarNode) and node.tag == _INT_TAG:
            number = self._constructor.construct_object(node)
            if minimum <= number <= maximum:
                return int(number)
            self._error(node, f"'{what}' must be between {minimum} and {maximum}, got {number}")
            return None
        self._error(node, f"'{what}' must be a whole number, got {_describe(node)}")
        return None

    def _flag(self, fields: dict[str, yaml.Node], what: str) -> bool:
        node = fields.get(what)
        if node is None:
            return False
        if isinstance(node, yaml.ScalarNode) and node.tag == _BOOL_TAG:
            return bool(self._constructor.construct_object(node))
        self._error(node, f"'{what}' must be true or false")
        return False

    def _unit(self, node: yaml.Node, report: bool) -> Unit | None:
        """The unit named by node; an unknown one is an error only when `report` is set (the
        reference ignores a bad unit beside `unlimited: true`)."""
        text = self._string(node, "unit").strip()
        if text.upper() in Unit.__members__:
            return Unit[text.upper()]
        if not report:
            return None
        names = [u.name.lower() for u in Unit]
        hint = difflib.get_close_matches(text.lower(), names, n=1)
        suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
        self._error(node, f"unknown unit '{text}' (expected one of {', '.join(names)}){suggestion}")
        return None

    def _choice(self, node: yaml.Node, what: str, choices: Sequence[str]) -> str | None:
        text = self._string(node, what)
        if text in choices:
            return text
        hint = difflib.get_close_matches(text, choices, n=1)
        suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
        self._error(
            node, f"unknown {what} '{text}' (expected one of {', '.join(choices)}){suggestion}"
        )
        return None

    # -- positions -------------------------------------------------------------------------

    def _source(self, node: yaml.Node) -> Source:
        return Source(self.file, node.start_mark.line + 1)

    def _error(self, node: yaml.Node, message: str) -> None:
        self._error_at(node.start_mark.line + 1, message)

    def _error_at(self, line: int | None, message: str) -> None:
        self.errors.append(ConfigError(self.file, line, message))

    def _error_in(self, source: Source, message: str) -> None:
        """An error in whichever file `source` is in (a tenant list's tenants)."""
        self.errors.append(ConfigError(source.file, source.line, message))


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
