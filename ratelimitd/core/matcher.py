"""Descriptor -> rule, walking the config tree exactly as envoyproxy/ratelimit does.

At each level the entry's key selects its siblings, then the first of: the exact value (a dict
lookup), the wildcard values in file order, the key-only node. There is no backtracking, and
only the node reached by the last entry contributes its rule. The cost is proportional to the
descriptor's depth (plus wildcards tried), never to the number of configured values.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from ratelimitd.model.rules import KeyIndex, Node, Rule


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


class How(enum.Enum):
    """How a candidate node matches an entry's value, in the order the walk tries them."""

    EXACT = "exact"
    WILDCARD = "wildcard"
    KEY_ONLY = "key-only"


class Tried(NamedTuple):
    """A node the walk tried for one entry, and whether the entry's value matched it."""

    how: How
    node: Node
    matched: bool


class Step(NamedTuple):
    """One entry's turn in a traced walk: the keys configured at its level, the candidates
    tried in order, and the node taken (None: the walk stopped here)."""

    key: str
    value: str
    keys_here: tuple[str, ...]
    tried: tuple[Tried, ...]
    taken: Node | None


def trace(root: Mapping[str, KeyIndex], entries: Sequence[tuple[str, str]]) -> list[Step]:
    """walk() with its working shown, for explain: one Step per entry up to and including the
    one where the walk stops. The nodes taken are exactly walk()'s path.

    A separate function, because recording every candidate would slow the hot path of walk().
    """
    steps: list[Step] = []
    level = root
    for key, value in entries:
        index = level.get(key)
        tried: list[Tried] = []
        taken: Node | None = None
        if index is not None:
            taken = index.exact.get(value)
            if taken is not None:
                tried.append(Tried(How.EXACT, taken, True))
            else:
                for wildcard in index.wildcards:
                    matched = wildcard.matches(value)
                    tried.append(Tried(How.WILDCARD, wildcard.node, matched))
                    if matched:
                        taken = wildcard.node
                        break
                if taken is None and index.any_value is not None:
                    taken = index.any_value
                    tried.append(Tried(How.KEY_ONLY, taken, True))
        steps.append(Step(key, value, tuple(level), tuple(tried), taken))
        if taken is None:
            break
        level = taken.children
    return steps
