"""A domain's `rlqs:` section: how the rate_limit_quota filter's buckets find their rules.

rlqs:
  bucket_keys: [tenant, route]   # these bucket_id keys, in this order, are the descriptor
  unmatched: allow_all           # or deny_all, or a rate_limit of its own
"""

from __future__ import annotations

import yaml

from ratelimitd.config.descriptors import DescriptorReader
from ratelimitd.model.rules import Blanket, QuotaBuckets, Rule

RLQS_FIELDS = ("bucket_keys", "unmatched")
BLANKETS = tuple(b.value for b in Blanket)
# The full key of the rule a domain's unmatched buckets share.
UNMATCHED_KEY = "rlqs_unmatched"


def read_rlqs(descriptors: DescriptorReader, node: yaml.Node | None) -> QuotaBuckets | None:
    """The section, or None when absent or (after its errors) unusable."""
    if node is None:
        return None
    nodes = descriptors.nodes
    fields = nodes.mapping(node, RLQS_FIELDS, "rlqs")
    if fields is None:
        return None
    keys_node = fields.get("bucket_keys")
    if not isinstance(keys_node, yaml.SequenceNode) or not keys_node.value:
        nodes.error(keys_node or node, "'rlqs' needs 'bucket_keys': a list of bucket_id keys")
        return None
    keys = tuple(nodes.string(key, "a bucket key") for key in keys_node.value)
    if not all(keys):
        return None
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        nodes.error(keys_node, f"bucket key '{repeated[0]}' is listed twice")
        return None
    unmatched = _unmatched(descriptors, fields.get("unmatched"))
    if unmatched is None:
        return None
    return QuotaBuckets(keys, unmatched, nodes.source(node))


def _unmatched(descriptors: DescriptorReader, node: yaml.Node | None) -> Blanket | Rule | None:
    """`unmatched`: a blanket rule's name, or a rate_limit mapping; allow_all if absent."""
    nodes = descriptors.nodes
    if node is None:
        return Blanket.ALLOW_ALL
    if isinstance(node, yaml.MappingNode):
        full_key = f"{descriptors.domain}.{UNMATCHED_KEY}"
        return descriptors.rule(node, full_key, False, False, nodes.source(node))
    choice = nodes.choice(node, "unmatched", BLANKETS)
    return None if choice is None else Blanket(choice)
