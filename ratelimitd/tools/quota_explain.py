"""`ratelimitd explain --bucket`: why a rate_limit_quota bucket gets its assignment — the
descriptor its bucket_id forms, the matcher's walk, the rule (or blanket) it resolves to,
and the fleet's split as the demand store holds it now."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ratelimitd.core import quota_share
from ratelimitd.core.matcher import Step, trace
from ratelimitd.core.quota_rules import descriptor, resolve
from ratelimitd.model.quota import BucketId, Demand
from ratelimitd.model.rules import Blanket, Config, QuotaBuckets, Rule


@dataclass(frozen=True, slots=True)
class BucketExplanation:
    """One bucket: its domain's `rlqs:` section (None: not configured, Envoy is told to
    abandon it), the descriptor and walk, what it resolves to, and each live Envoy's demand
    with the fraction it would be assigned now."""

    domain: str
    bucket: BucketId
    section: QuotaBuckets | None
    entries: tuple[tuple[str, str], ...]
    steps: tuple[Step, ...]
    target: Rule | Blanket | None
    split: tuple[tuple[Demand, float], ...]


def explain_bucket(
    config: Config, domain: str, bucket: BucketId, demands: Mapping[str, Demand], now_us: int
) -> BucketExplanation:
    """Explain `bucket` of `domain` with the demands the store holds for it."""
    found = config.domains.get(domain)
    section = found.rlqs if found is not None else None
    entries: tuple[tuple[str, str], ...] = ()
    steps: tuple[Step, ...] = ()
    if found is not None and section is not None:
        entries = descriptor(section.keys, bucket)
        steps = tuple(trace(found.root, entries))
    target = resolve(config, domain, bucket)
    live = [d for d in demands.values() if quota_share.is_live(d, now_us)]
    split: tuple[tuple[Demand, float], ...] = ()
    if isinstance(target, Rule):
        split = tuple((d, quota_share.fraction_for(d.client, live)) for d in live)
    return BucketExplanation(domain, bucket, section, entries, steps, target, split)


def _target_text(target: Rule | Blanket | None) -> str:
    if target is None:
        return "abandoned: the domain has no rlqs: section (Envoy drops the bucket)"
    if isinstance(target, Blanket):
        return f"blanket {target.name}"
    limit = target.limit
    assert limit is not None  # resolve() answers unlimited rules with a Blanket
    per_second = limit.requests_per_unit / limit.window_seconds
    return (
        f"rule {target.label} ({target.source}): {limit.requests_per_unit} per "
        f"{limit.window_text()} across the fleet ({per_second:g}/s)"
    )


def render_bucket_text(explanation: BucketExplanation) -> str:
    """The explanation for people."""
    bucket = ", ".join(f"{k}={v}" for k, v in explanation.bucket)
    lines = [f"bucket {{{bucket}}} of domain {explanation.domain}"]
    if explanation.section is not None:
        keys = ", ".join(explanation.section.keys)
        lines.append(f"  rlqs ({explanation.section.source}): bucket_keys [{keys}]")
        formed = ",".join(f"{k}={v}" for k, v in explanation.entries) or "(none of the keys)"
        lines.append(f"  descriptor: {formed}")
        for step in explanation.steps:
            taken = f"taken {step.taken.source}" if step.taken else "the walk stops"
            lines.append(f"    {step.key}={step.value}: {taken}")
    lines.append(f"  -> {_target_text(explanation.target)}")
    if isinstance(explanation.target, Rule):
        if not explanation.split:
            lines.append("  no Envoy reports this bucket now")
        for demand, fraction in explanation.split:
            rate = "unknown yet" if demand.rate is None else f"{demand.rate:.2f}/s"
            lines.append(
                f"  envoy {demand.client}: demand {rate}, assigned {demand.assigned:.3f}, "
                f"would get {fraction:.3f} now (reports every {demand.interval_s:g}s)"
            )
    return "\n".join(lines) + "\n"


def bucket_json(explanation: BucketExplanation) -> dict[str, Any]:
    """The explanation as JSON-ready data."""
    target = explanation.target
    return {
        "domain": explanation.domain,
        "bucket": dict(explanation.bucket),
        "bucket_keys": list(explanation.section.keys) if explanation.section else None,
        "descriptor": [list(entry) for entry in explanation.entries],
        "resolves_to": (
            None
            if target is None
            else {"blanket": target.value}
            if isinstance(target, Blanket)
            else {"rule": target.label, "source": str(target.source)}
        ),
        "envoys": [
            {
                "client": d.client,
                "demand": d.rate,
                "assigned": d.assigned,
                "would_get": fraction,
                "interval_s": d.interval_s,
            }
            for d, fraction in explanation.split
        ],
    }
