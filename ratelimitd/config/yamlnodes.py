"""Typed reads of YAML nodes: each problem becomes a ConfigError at the node's file and line.

The loader works on the node tree (yaml.compose) rather than on loaded Python values, because
only the nodes know their line numbers.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import yaml

from ratelimitd.algorithms import ALGORITHMS
from ratelimitd.config.errors import ConfigError
from ratelimitd.model.rules import FailureMode, Source, Unit

UINT32_MAX = 2**32 - 1
NULL_TAG = "tag:yaml.org,2002:null"
SEQ_TAG = "tag:yaml.org,2002:seq"
_STR_TAG = "tag:yaml.org,2002:str"
_INT_TAG = "tag:yaml.org,2002:int"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# Every key the reference's loader accepts, at any level (its validKeys): a level's own
# struct ignores the others.
REFERENCE_KEYS = frozenset(
    (
        "domain",
        "key",
        "value",
        "descriptors",
        "rate_limit",
        "unit",
        "requests_per_unit",
        "unlimited",
        "shadow_mode",
        "name",
        "replaces",
        "detailed_metric",
        "value_to_metric",
        "share_threshold",
        "quota_mode",
        "metadata",
    )
)

_YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Fields = dict[str, yaml.Node]


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """`; did you mean 'x'?` for the closest of `choices`, or "" when none is close."""
    hint = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean '{hint[0]}'?" if hint else ""


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"'{node.value}'"


class NodeReader:
    """Reads the nodes of one file and collects its errors, in the order they are found."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.errors: list[ConfigError] = []
        self.warnings: list[ConfigError] = []  # accepted, but something is ignored
        self._constructor = yaml.constructor.SafeConstructor()

    def document(self, text: str) -> yaml.Node | None:
        """The file's first document (only it counts, as in the reference); None after a
        syntax error."""
        try:
            return next(iter(yaml.compose_all(text, Loader=_YamlLoader)), None)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or exc.context or "invalid YAML"
            self.error_at(mark.line + 1 if mark else None, f"YAML syntax error: {problem}")
        except yaml.YAMLError as exc:
            self.error_at(None, f"YAML syntax error: {exc}")
        return None

    def mapping(
        self, node: yaml.Node, allowed: Sequence[str], where: str, reference: bool = False
    ) -> Fields | None:
        """The fields of a mapping with only `allowed` string keys; None if not a mapping.

        As the reference (yaml.v2, not strict) reads it: merge keys (`<<`) expanded, a later
        duplicate key wins. A level of the reference's format (`reference`) also accepts the
        reference's keys it ignores there. Both are warned about, with their lines.
        """
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{where} must be a mapping")
            return None
        fields: Fields = {}
        seen: dict[str, tuple[yaml.Node, bool]] = {}
        for key_node, value_node, merged in self.pairs(node):
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR_TAG:
                self.error(key_node, f"keys in {where} must be strings")
                continue
            name = key_node.value
            if name in allowed:
                self._note_override(seen.get(name), key_node, merged)
                seen[name] = (key_node, merged)
                # A null value (`key: ~` or `key:`) counts as absent, as in the reference.
                if value_node.tag == NULL_TAG:
                    fields.pop(name, None)
                else:
                    fields[name] = value_node
            elif reference and name in REFERENCE_KEYS:
                self.warning(key_node, f"'{name}' is ignored in {where} (as in the reference)")
            else:
                suggestion = did_you_mean(name, allowed)
                self.error(key_node, f"unknown key '{name}' in {where}{suggestion}")
        return fields

    def _note_override(
        self, earlier: tuple[yaml.Node, bool] | None, key_node: yaml.Node, merged: bool
    ) -> None:
        """Warn when a key written out is overridden: by the same key again, or by a merge
        key after it. (A key written out overriding a merged one is what merging is for.)"""
        if earlier is None or earlier[1]:
            return
        first = earlier[0].start_mark.line + 1
        if merged:
            message = f"'{key_node.value}' of line {first} is overridden by a merge key ('<<')"
        else:
            message = f"duplicate key '{key_node.value}' (first at line {first})"
        self.warning(key_node if not merged else earlier[0], f"{message}: the later value is used")

    def pairs(
        self, node: yaml.MappingNode, within: frozenset[int] = frozenset()
    ) -> list[tuple[yaml.Node, yaml.Node, bool]]:
        """A mapping's (key, value, merged) in the order yaml.v2 applies them: a merge key's
        mappings at its place (of a list of them, the last first, so the first wins), each
        pair marked whether it came from a merge. `within`: the mappings being expanded."""
        within |= {id(node)}
        found: list[tuple[yaml.Node, yaml.Node, bool]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                found.append((key_node, value_node, False))
                continue
            merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in reversed(merged):
                if not isinstance(source, yaml.MappingNode):
                    self.error(source, "a merge key ('<<') takes a mapping or a list of mappings")
                elif id(source) in within:
                    self.error(key_node, "a merge key ('<<') merges a mapping into itself")
                else:
                    found += [(k, v, True) for k, v, _ in self.pairs(source, within)]
        return found

    def free_value(
        self, node: yaml.Node, what: str, within: frozenset[int] = frozenset()
    ) -> object:
        """A node as plain data (mappings with string keys, lists, strings, numbers, booleans,
        None): scalars other than numbers, booleans and null stay the text written.
        `within`: the collections being read (an alias to one of them is an error)."""
        if id(node) in within:
            self.error(node, f"'{what}' contains itself (an alias to an enclosing anchor)")
            return None
        if isinstance(node, yaml.MappingNode):
            within |= {id(node)}
            value: dict[str, object] = {}
            seen: dict[str, tuple[yaml.Node, bool]] = {}
            for key_node, value_node, merged in self.pairs(node):
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR_TAG:
                    self.error(key_node, f"keys in '{what}' must be strings")
                    continue
                self._note_override(seen.get(key_node.value), key_node, merged)
                seen[key_node.value] = (key_node, merged)
                value[key_node.value] = self.free_value(value_node, what, within)
            return value
        if isinstance(node, yaml.SequenceNode):
            within |= {id(node)}
            return [self.free_value(item, what, within) for item in node.value]
        if node.tag in (_INT_TAG, _FLOAT_TAG, _BOOL_TAG, NULL_TAG):
            plain = self._constructor.construct_object(node)
            return float(plain) if isinstance(plain, int) and not isinstance(plain, bool) else plain
        return str(node.value)

    def named_mappings(
        self, node: yaml.Node | None, what: str, allowed: Sequence[str]
    ) -> dict[str, tuple[yaml.Node, Fields]]:
        """A mapping of names to mappings of `allowed` fields, e.g. `plans`."""
        found: dict[str, tuple[yaml.Node, Fields]] = {}
        if node is None:
            return found
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"'{what}' must be a mapping of names")
            return found
        for key_node, value_node in node.value:
            name = self.string(key_node, f"a name in {what}")
            if not name:
                continue
            if name in found:
                line = found[name][0].start_mark.line + 1
                self.error(key_node, f"duplicate {what} entry '{name}' (first at line {line})")
                continue
            fields = self.mapping(value_node, allowed, f"{what} '{name}'")
            if fields is not None:
                found[name] = (key_node, fields)
        return found

    def string(self, node: yaml.Node, what: str) -> str:
        """A scalar's text as written ("" for null, or after an error)."""
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, f"'{what}' must be a string")
            return ""
        # Scalars are read as written, so `value: 123` is "123" as in the reference.
        return "" if node.tag == NULL_TAG else str(node.value)

    def optional_string(self, fields: Fields, what: str) -> str:
        """The string field `what`, "" when absent."""
        node = fields.get(what)
        return self.string(node, what) if node is not None else ""

    def integer(self, node: yaml.Node | None, what: str, minimum: int, maximum: int) -> int | None:
        """A whole number within bounds; None when absent or after an error."""
        if node is None:
            return None
        if isinstance(node, yaml.ScalarNode) and node.tag == _INT_TAG:
            number = self._constructor.construct_object(node)
            if minimum <= number <= maximum:
                return int(number)
            self.error(node, f"'{what}' must be between {minimum} and {maximum}, got {number}")
            return None
        self.error(node, f"'{what}' must be a whole number, got {_describe(node)}")
        return None

    def flag(self, fields: Fields, what: str) -> bool:
        """The boolean field `what`, False when absent or after an error."""
        node = fields.get(what)
        if node is None:
            return False
        if isinstance(node, yaml.ScalarNode) and node.tag == _BOOL_TAG:
            return bool(self._constructor.construct_object(node))
        self.error(node, f"'{what}' must be true or false")
        return False

    def unit(self, node: yaml.Node, report: bool) -> Unit | None:
        """The unit named by node; an unknown one is an error only when `report` is set (the
        reference ignores a bad unit beside `unlimited: true`)."""
        text = self.string(node, "unit").strip()
        if text.upper() in Unit.__members__:
            return Unit[text.upper()]
        if not report:
            return None
        names = [u.name.lower() for u in Unit]
        suggestion = did_you_mean(text.lower(), names)
        self.error(node, f"unknown unit '{text}' (expected one of {', '.join(names)}){suggestion}")
        return None

    def choice(self, node: yaml.Node, what: str, choices: Sequence[str]) -> str | None:
        """One of `choices`; None after an error."""
        text = self.string(node, what)
        if text in choices:
            return text
        suggestion = did_you_mean(text, choices)
        self.error(
            node, f"unknown {what} '{text}' (expected one of {', '.join(choices)}){suggestion}"
        )
        return None

    def algorithm(self, node: yaml.Node | None, default: str) -> str:
        """An algorithm's name, `default` when absent or unknown."""
        if node is None:
            return default
        return self.choice(node, "algorithm", sorted(ALGORITHMS)) or default

    def failure_mode(self, node: yaml.Node | None, default: FailureMode) -> FailureMode:
        """A failure mode, `default` when absent or unknown."""
        if node is None:
            return default
        mode = self.choice(node, "failure_mode", [m.value for m in FailureMode])
        return FailureMode(mode) if mode else default

    def source(self, node: yaml.Node) -> Source:
        """Where `node` starts."""
        return Source(self.file, node.start_mark.line + 1)

    def error(self, node: yaml.Node, message: str) -> None:
        """An error at `node`'s line."""
        self.error_at(node.start_mark.line + 1, message)

    def warning(self, node: yaml.Node, message: str) -> None:
        """A warning at `node`'s line: the file loads, something in it has no effect."""
        self.warnings.append(ConfigError(self.file, node.start_mark.line + 1, message))

    def error_at(self, line: int | None, message: str) -> None:
        """An error at `line` of this file (None: the whole file)."""
        self.errors.append(ConfigError(self.file, line, message))

    def error_in(self, source: Source, message: str) -> None:
        """An error in whichever file `source` is in (a tenant list's tenants)."""
        self.errors.append(ConfigError(source.file, source.line, message))
