"""The dynamic metadata of an answer (RESPONSE_DYNAMIC_METADATA), as plain data for a wire
encoder: what Envoy's rate limit filter stores under `envoy.filters.http.ratelimit`, for
access logs and later filters.

The reference's keys: `domain`; `descriptors`, each with its `entries` (`key=value`), its
limit override (`limit`, in protobuf's text format) and its own `hitsAddend`; the request's
`hitsAddend` (when not 0); `metadata`, the `metadata:` of the rules the request passed,
merged in request order (the first value of a key wins, mappings under the same key are
merged). Ours besides: `overLimit`, each rule over its limit (name, remaining, seconds to
reset), and `firedLimit`, the name of the one the client waits for longest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ratelimitd.core.fired import binding, fired
from ratelimitd.core.headers import whole_seconds
from ratelimitd.model.messages import Code, Descriptor, LimitOverride, Request, Status

Fields = dict[str, object]


def request_fields(request: Request) -> Fields:
    """The fields fixed by the request: the same for every answer to it."""
    fields: Fields = {
        "domain": request.domain,
        "descriptors": [_descriptor(d) for d in request.descriptors],
    }
    if request.hits_addend:
        fields["hitsAddend"] = float(request.hits_addend)
    return fields


def decision_fields(statuses: Sequence[Status]) -> Fields:
    """The fields that depend on the answer: the merged metadata of the limits passed, and
    the limits over."""
    fields: Fields = {}
    merged: dict[str, object] = {}
    for status in statuses:
        rule = status.rule
        # As the reference: limits passed, not unlimited ones (nor unmatched or replaced).
        passed = status.code is Code.OK and rule is not None and rule.limit is not None
        if passed and rule is not None and rule.metadata:
            _merge(merged, rule.metadata)
    if merged:
        fields["metadata"] = merged
    over = fired(statuses)
    first = binding(statuses)
    if first is not None and first.rule is not None:
        fields["overLimit"] = [_over(status) for status in over]
        fields["firedLimit"] = first.rule.label
    return fields


def _descriptor(descriptor: Descriptor) -> Fields:
    fields: Fields = {"entries": [f"{key}={value}" for key, value in descriptor.entries]}
    if descriptor.limit is not None:
        fields["limit"] = _override_text(descriptor.limit)
    if descriptor.hits_addend is not None:  # present, even 0 (a check)
        fields["hitsAddend"] = float(descriptor.hits_addend)
    return fields


def _override_text(limit: LimitOverride) -> str:
    """The override in protobuf's text format, as Go's String() gives it (fields at their
    default left out; the reference's Go may add a second space, at random, on purpose)."""
    parts = [f"requests_per_unit:{limit.requests_per_unit}"] if limit.requests_per_unit else []
    return " ".join([*parts, f"unit:{limit.unit.name}"])


def _over(status: Status) -> Fields:
    assert status.rule is not None
    return {
        "name": status.rule.label,
        "remaining": float(status.remaining),
        "resetSeconds": float(whole_seconds(status.reset_us or 0)),
    }


def _merge(into: dict[str, object], source: Mapping[str, object]) -> None:
    """Merge `source` into `into`: keys already there keep their value, except mappings under
    the same key, merged in turn. Mappings are copied as they are merged, so that no rule's
    own metadata is ever changed."""
    for key, value in source.items():
        if key not in into:
            if isinstance(value, Mapping):
                copied: dict[str, object] = {}
                _merge(copied, value)
                value = copied
            into[key] = value
        else:
            present = into[key]
            if isinstance(present, dict) and isinstance(value, Mapping):
                _merge(present, value)
