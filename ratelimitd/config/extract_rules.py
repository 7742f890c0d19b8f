"""A domain's `extract:` section: how an external authorization call's HTTP request becomes
descriptors, read into ExtractDescriptor entries (ratelimitd.core.extract applies them)."""

from __future__ import annotations

import re

import yaml

from ratelimitd.config.yamlnodes import Fields, NodeReader
from ratelimitd.model.rules import ExtractDescriptor, ExtractEntry

# Where an entry's value comes from: its ExtractEntry.kind.
SOURCES = ("header", "path", "path_segments", "method", "source_address", "jwt_claim", "value")
EXTRACT_FIELDS = ("entries",)
EXTRACT_ENTRY_FIELDS = ("key", *SOURCES, "regex", "trusted_hops", "jwt_header")
MAX_TRUSTED_HOPS = 16
MAX_PATH_SEGMENTS = 64
# The sources each modifier applies to.
_MODIFIERS = (
    ("regex", ("header", "jwt_claim")),
    ("trusted_hops", ("source_address",)),
    ("jwt_header", ("jwt_claim",)),
)


def compile_path_template(template: str) -> re.Pattern[str]:
    """`/v1/{tenant}/**` -> a pattern whose one group is the `{...}` segment: `*` matches one
    segment, a final `**` any rest (or none). ValueError, saying why, if malformed."""
    if not template.startswith("/"):
        raise ValueError("a path template starts with '/'")
    parts = template.split("/")[1:]
    pieces = []
    captures = 0
    for i, part in enumerate(parts):
        if part == "**":
            if i != len(parts) - 1:
                raise ValueError("'**' may only end a path template")
            pieces.append("(?:/.*)?")
            continue
        if part.startswith("{") and part.endswith("}"):
            captures += 1
            piece = "([^/]+)"
        elif part == "*":
            piece = "[^/]+"
        elif "{" in part or "}" in part or "*" in part:
            raise ValueError(f"segment '{part}': '{{name}}', '*' and '**' stand alone")
        else:
            piece = re.escape(part)
        pieces.append("/" + piece)
    if captures != 1:
        raise ValueError(f"a path template captures exactly one '{{name}}' segment, not {captures}")
    return re.compile("".join(pieces))


def read_extract(nodes: NodeReader, node: yaml.Node | None) -> tuple[ExtractDescriptor, ...]:
    """`extract:`, a list of descriptors, each `{entries: [...]}`; a descriptor with a bad
    entry is left out (after its errors)."""
    if node is None:
        return ()
    if not isinstance(node, yaml.SequenceNode):
        nodes.error(node, "'extract' must be a list of {entries: [...]}")
        return ()
    found = []
    for item in node.value:
        fields = nodes.mapping(item, EXTRACT_FIELDS, "an extract descriptor")
        if fields is None:
            continue
        entries_node = fields.get("entries")
        if not isinstance(entries_node, yaml.SequenceNode) or not entries_node.value:
            nodes.error(entries_node or item, "an extract descriptor needs a list of 'entries'")
            continue
        entries = [_entry(nodes, entry) for entry in entries_node.value]
        if all(entries):
            found.append(ExtractDescriptor(tuple(filter(None, entries)), nodes.source(item)))
    return tuple(found)


def _entry(nodes: NodeReader, node: yaml.Node) -> ExtractEntry | None:
    fields = nodes.mapping(node, EXTRACT_ENTRY_FIELDS, "an extract entry")
    if fields is None:
        return None
    key = nodes.optional_string(fields, "key")
    if not key:
        nodes.error(fields.get("key") or node, "an extract entry needs a non-empty 'key'")
    kinds = [kind for kind in SOURCES if kind in fields]
    if len(kinds) != 1:
        nodes.error(
            node,
            f"an extract entry takes its value from exactly one of "
            f"{', '.join(SOURCES)} (found {len(kinds)})",
        )
        return None
    kind = kinds[0]
    for modifier, applies_to in _MODIFIERS:
        if modifier in fields and kind not in applies_to:
            sources = " and ".join(applies_to)
            nodes.error(fields[modifier], f"'{modifier}' applies to {sources} only")
    errors_before = len(nodes.errors)
    argument, pattern = _argument(nodes, kind, fields[kind], fields)
    if not key or len(nodes.errors) > errors_before:
        return None
    jwt_header = fields.get("jwt_header")
    header = nodes.string(jwt_header, "jwt_header").lower() if jwt_header else "authorization"
    return ExtractEntry(key, kind, argument, pattern, nodes.source(node), header)


def _argument(
    nodes: NodeReader, kind: str, node: yaml.Node, fields: Fields
) -> tuple[str | int, re.Pattern[str] | None]:
    """The source's argument and compiled pattern (from `path`, or a `regex`)."""
    if kind in ("method", "source_address"):
        if not nodes.flag(fields, kind):
            nodes.error(node, f"'{kind}' must be true")
        hops = nodes.integer(fields.get("trusted_hops"), "trusted_hops", 0, MAX_TRUSTED_HOPS)
        return hops or 0, None
    if kind == "path_segments":
        count = nodes.integer(node, "path_segments", 1, MAX_PATH_SEGMENTS)
        return count or 1, None
    text = nodes.string(node, kind)
    if not text:
        nodes.error(node, f"'{kind}' must be a non-empty string")
        return "", None
    if kind == "path":
        try:
            return text, compile_path_template(text)
        except ValueError as exc:
            nodes.error(node, f"path template '{text}': {exc}")
            return "", None
    pattern = None
    if "regex" in fields:
        expression = nodes.string(fields["regex"], "regex")
        try:
            pattern = re.compile(expression)
        except re.error as exc:
            nodes.error(fields["regex"], f"regex '{expression}': {exc}")
    return (text.lower() if kind == "header" else text), pattern
