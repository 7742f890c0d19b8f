"""YAML files and directories -> a validated, immutable Config.

The format is envoyproxy/ratelimit's, unchanged, plus optional per-rule extensions
(`algorithm`, `burst`, `failure_mode`). Every problem is reported with its file and line, and
all problems of all files are reported at once rather than stopping at the first.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from ratelimitd.algorithms import ALGORITHMS
from ratelimitd.config.errors import ConfigError, InvalidConfigError
from ratelimitd.config.model import (
    Config,
    Defaults,
    Domain,
    FailureMode,
    KeyIndex,
    Limit,
    Node,
    Rule,
    Source,
    Unit,
    Wildcard,
)

CONFIG_SUFFIXES = (".yaml", ".yml")
UINT32_MAX = 2**32 - 1

_YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_BOOL_TAG = "tag:yaml.org,2002:bool"

TOP_FIELDS = ("domain", "descriptors", "defaults")
DEFAULTS_FIELDS = ("algorithm", "failure_mode")
# A bucket may take at most this long to refill; it also keeps every store computation exact.
MAX_REFILL_SECONDS = 10 * 365 * 86_400
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
    files, errors = discover(paths)
    if not files and not errors:
        errors.append(
            ConfigError(", ".join(map(str, paths)) or "--config", None, "no config files")
        )
    domains: dict[str, Domain] = {}
    rules: list[Rule] = []
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
        domain = parser.parse(text)
        errors.extend(parser.errors)
        if domain is None:
            continue
        first = domains.get(domain.name)
        if first is not None:
            errors.append(
                ConfigError(
                    domain.source.file,
                    domain.source.line,
                    f"duplicate domain '{domain.name}' (already defined at {first.source})",
                )
            )
            continue
        domains[domain.name] = domain
        rules.extend(parser.rules)
    if errors:
        raise InvalidConfigError(errors)
    return Config(
        domains=domains,
        rules=tuple(rules),
        files=tuple(str(f) for f in files),
        digest=digest.hexdigest(),
    )


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

    def parse(self, text: str) -> Domain | None:
        try:
            # Only the first document counts, as in the reference.
            node = next(iter(yaml.compose_all(text, Loader=_YamlLoader)), None)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or exc.context or "invalid YAML"
            self._error_at(mark.line + 1 if mark else None, f"YAML syntax error: {problem}")
            return None
        except yaml.YAMLError as exc:
            self._error_at(None, f"YAML syntax error: {exc}")
            return None
        if node is None or node.tag == _NULL_TAG:
            self._error_at(None, "empty file: expected a mapping with 'domain' and 'descriptors'")
            return None
        fields = self._mapping(node, TOP_FIELDS, "the top level")
        if fields is None:
            return None
        domain_node = fields.get("domain")
        if domain_node is None:
            self._error(node, "missing 'domain'")
            return None
        name = self._string(domain_node, "domain")
        if not name:
            if isinstance(domain_node, yaml.ScalarNode):
                self._error(domain_node, "'domain' must not be empty")
            return None
        if "defaults" in fields:
            self.defaults = self._defaults(fields["defaults"])
        root = self._level(fields.get("descriptors"), name, name)
        return Domain(name, root, self._source(domain_node), self.defaults)

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
        segment = key if value is None else f"{key}_{value}"
        full_key = f"{path}.{segment}"
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
        replaces = self._replaces(fields.get("replaces"), name)
        failure_mode = self._failure_mode(fields.get("failure_mode"), self.defaults.failure_mode)
        if len(self.errors) > errors_before:
            return None
        limit = None
        if unit is not None:
            per_unit = rpu or 0
            limit = Limit(algorithm, per_unit, unit, burst if burst is not None else per_unit)
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

    def _check_burst(
        self,
        node: yaml.Node,
        burst: int,
        algorithm: str,
        per_unit: int,
        unit: Unit | None,
        unlimited: bool,
    ) -> None:
        known = ALGORITHMS.get(algorithm)
        if known is not None and not known.uses_burst:
            users = ", ".join(sorted(a.name for a in ALGORITHMS.values() if a.uses_burst))
            self._error(node, f"burst does not apply to {algorithm} (only to {users})")
        elif unlimited or not per_unit:
            self._error(node, "burst needs a limit with requests_per_unit > 0")
        elif unit is not None and burst * unit.seconds > MAX_REFILL_SECONDS * per_unit:
            self._error(node, f"burst {burst} would take more than 10 years to refill")

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
