"""Descriptor -> rule, walking the config tree exactly as envoyproxy/ratelimit does.

At each level the entry's key selects its siblings, then the first of: the exact value (a dict
lookup), the wildcard values in file order, the key-only node. There is no backtracking, and
only the node reached by the last entry contributes its rule. The cost is proportional to the
descriptor's depth (plus wildcards tried), never to the number of configured values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from ratelimitd.config.model import KeyIndex, Node, Rule


class Match(NamedTuple):
    """The rule a descriptor reached, and per entry the wildcard pattern it shares a counter
    through (`share_threshold`), or None when no entry shares."""

    rule: Rule
    shared: tuple[str | None, ...] | None


def walk(root: Mapping[str, KeyIndex], entries: Sequence[tuple[str, str]]) -> list[Node]:
    """The nodes visited for `entries`, one per entry, stopping where the walk finds nothing."""
    path: list[Node] = []
    level = root
    for key, value in entries:
        index = level.get(key)
        if index is None:
            break
        node = index.exact.get(value)
        if node is None:
            node = next((w.node for w in index.wildcards if w.matches(value)), index.any_value)
            if node is None:
                break
        path.append(node)
        level = node.children
    return path


def match(root: Mapping[str, KeyIndex], entries: Sequence[tuple[str, str]]) -> Match | None:
    """The rule for a request descriptor, or None when it has no limit."""
    path = walk(root, entries)
    if len(path) != len(entries) or not path:
        return None
    rule = path[-1].rule
    if rule is None:
        return None
    if not any(node.share_threshold for node in path):
        return Match(rule, None)
    return Match(rule, tuple(n.value if n.share_threshold else None for n in path))
