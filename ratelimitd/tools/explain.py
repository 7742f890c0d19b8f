"""Why a request gets the answer it gets: `ratelimitd explain` and the admin `POST /explain`.

For each descriptor: the walk through the config (per entry, the candidates tried in the
reference's order with the file:line of every node tried, and the node taken or where the
walk stopped); the rule reached, or why none applies (unknown domain, no rule, unlimited,
replaced) or Envoy's limit override; the counter's store key exactly as the engine builds
it; the counter's state now; and what the request would get now. Counters are read with the
store's peek, a dry run that commits nothing, so explaining a request never changes what
the next real one gets.

Transport-free like the engine: no protobuf and no Redis client here (the command line, in
ratelimitd.cli, builds the engine and its store).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ratelimitd.algorithms import Hit, Outcome, keeps_charge, probes
from ratelimitd.core.engine import Engine
from ratelimitd.core.matcher import How, Match, Step, trace
from ratelimitd.core.rule_fields import rule_fields, summary
from ratelimitd.model.messages import Code, Decision, Descriptor, Request, Status
from ratelimitd.model.rules import Domain, Rule
from ratelimitd.storage.base import StoreError


class Verdict(enum.Enum):
    """Whether a descriptor is limited, and if not, why."""

    LIMITED = "limited"  # its counter is evaluated
    NO_RULE = "no_rule"  # the walk reached no rate_limit
    UNLIMITED = "unlimited"
    CONCURRENCY = "concurrency"  # a concurrency limit: the in-app middleware's, no counter
    REPLACED = "replaced"  # another matched rule's `replaces` names its rule
    UNKNOWN_DOMAIN = "unknown_domain"


class Counter(NamedTuple):
    """A limited descriptor's counter: its store key, the cost offered, its state now (a
    zero-cost peek) and what the cost gets as part of the request (None: the store failed)."""

    key: str
    cost: int
    now: Outcome | None
    offered: Outcome | None


@dataclass(frozen=True, slots=True)
class DescriptorExplanation:
    """One descriptor explained. `steps` is the walk (empty for an override or an unknown
    domain); `status` is the engine's answer for it now (None when the store failed)."""

    descriptor: Descriptor
    verdict: Verdict
    why: str
    steps: tuple[Step, ...]
    match: Match | None
    replaced_by: tuple[Rule, ...]
    counter: Counter | None
    status: Status | None


@dataclass(frozen=True, slots=True)
class Explanation:
    """A request explained; `decision` is what it would get now (None when the store failed,
    then `store_error` says why)."""

    request: Request
    domain: Domain | None
    descriptors: tuple[DescriptorExplanation, ...]
    decision: Decision | None
    store_error: str | None


async def explain(engine: Engine, request: Request) -> Explanation:
    """Explain `request` against the engine's config and store without consuming anything;
    raise InvalidRequestError for a malformed request."""
    plan = engine.plan(request)
    domain = engine.config.domains.get(request.domain)  # what plan() read: no await between
    hits = plan.hits
    # Zero-cost shadow copies read each counter as it is now; they change nothing the
    # request's own hits see, and one call reads both at the same instant.
    readings = probes(hits)
    now: Sequence[Outcome | None] = [None] * len(hits)
    offered: Sequence[Outcome | None] = now
    decision, error = None, None
    try:
        outcomes: list[Outcome] = []
        if hits:
            peeked = await engine.store.peek([*readings, *hits])
            now, outcomes = peeked[: len(hits)], peeked[len(hits) :]
            offered = outcomes
        decision = engine.conclude(plan, outcomes)
    except StoreError as exc:
        error = str(exc)
    hit_of = {i: n for n, (i, _, _) in enumerate(plan.hit_at)}
    items = []
    for i, (descriptor, found) in enumerate(zip(request.descriptors, plan.matches, strict=True)):
        steps: tuple[Step, ...] = ()
        if domain is not None and descriptor.limit is None:
            steps = tuple(trace(domain.root, descriptor.entries))
        replaced_by: tuple[Rule, ...] = ()
        if found is not None and plan.replaced[i]:
            name = found.rule.name
            # Each replacing rule once, however many descriptors matched it.
            replaced_by = tuple(
                dict.fromkeys(
                    m.rule for m in plan.matches if m is not None and name in m.rule.replaces
                )
            )
        n = hit_of.get(i)
        counter = None
        if n is not None:
            counter = Counter(hits[n].key, hits[n].cost, now[n], offered[n])
            verdict = Verdict.LIMITED
        elif domain is None:
            verdict = Verdict.UNKNOWN_DOMAIN
        elif found is None:
            verdict = Verdict.NO_RULE
        elif plan.replaced[i]:  # the engine drops replaced rules before looking at `unlimited`
            verdict = Verdict.REPLACED
        elif found.rule.concurrency is not None:
            verdict = Verdict.CONCURRENCY
        else:
            verdict = Verdict.UNLIMITED
        why = _why(verdict, request.domain, descriptor, steps, found, replaced_by)
        status = decision.statuses[i] if decision is not None else None
        items.append(
            DescriptorExplanation(
                descriptor, verdict, why, steps, found, replaced_by, counter, status
            )
        )
    return Explanation(request, domain, tuple(items), decision, error)


def _why(
    verdict: Verdict,
    domain: str,
    descriptor: Descriptor,
    steps: Sequence[Step],
    found: Match | None,
    replaced_by: Sequence[Rule],
) -> str:
    """One sentence saying why the descriptor is (not) limited."""
    if verdict is Verdict.UNKNOWN_DOMAIN:
        return f"no config defines domain '{domain}': no limit applies"
    if descriptor.limit is not None:
        override = descriptor.limit
        return (
            f"Envoy's limit override {override.requests_per_unit}/{override.unit.name.lower()} "
            "applies; the config is not consulted"
        )
    last = steps[-1]
    if last.taken is None:
        at = f"entry {len(steps)} ({last.key}={last.value})"
        if last.key not in last.keys_here:
            return f"the walk stopped at {at}: no descriptor with key '{last.key}' there"
        return f"the walk stopped at {at}: no value matched and there is no key-only node"
    # trace() stops only where nothing matched, so here every entry found its node.
    if found is None:
        return f"the walk ended at {last.taken.source}, which has no rate_limit"
    rule = found.rule
    if verdict is Verdict.REPLACED:
        by = ", ".join(f"{r.full_key} ({r.source})" for r in replaced_by)
        return f"the rule at {rule.source} is named '{rule.name}', which {by} replaces"
    if verdict is Verdict.UNLIMITED:
        return f"the rule at {rule.source} is unlimited"
    if verdict is Verdict.CONCURRENCY:
        return (
            f"the rule at {rule.source} is a concurrency limit ({rule.concurrency} in flight), "
            "which only the in-app middleware enforces: no limit here"
        )
    return f"the rule at {rule.source} applies"


def to_json(explanation: Explanation) -> dict[str, Any]:
    """The explanation as JSON-ready data (the body of POST /explain, `explain --json`)."""
    decision = explanation.decision
    domain = explanation.domain
    return {
        "domain": explanation.request.domain,
        "domain_source": str(domain.source) if domain is not None else None,
        "hits_addend": explanation.request.hits_addend,
        "code": decision.code.name if decision is not None else None,
        "response_headers": None
        if decision is None
        else [{"key": k, "value": v} for k, v in decision.response_headers],
        "store_error": explanation.store_error,
        "descriptors": [_descriptor_json(d) for d in explanation.descriptors],
    }


def _descriptor_json(item: DescriptorExplanation) -> dict[str, Any]:
    descriptor, counter, status = item.descriptor, item.counter, item.status
    override = descriptor.limit
    return {
        "entries": [{"key": k, "value": v} for k, v in descriptor.entries],
        "limit_override": None
        if override is None
        else {"requests_per_unit": override.requests_per_unit, "unit": override.unit.name},
        "hits_addend": descriptor.hits_addend,
        "verdict": item.verdict.value,
        "why": item.why,
        "walk": [_step_json(step) for step in item.steps],
        "rule": None if item.match is None else rule_fields(item.match.rule),
        "shared": None if item.match is None else item.match.shared,
        "replaced_by": [rule_fields(rule) for rule in item.replaced_by],
        "counter": None
        if counter is None
        else {
            "key": counter.key,
            "cost": counter.cost,
            "now": None
            if counter.now is None
            else {"remaining": counter.now.remaining, "reset_us": counter.now.reset_us},
            "admitted": None if counter.offered is None else counter.offered.admitted,
        },
        "status": None
        if status is None
        else {
            "code": status.code.name,
            "limit_remaining": status.remaining,
            "reset_us": status.reset_us,
            "result": None if status.result is None else status.result.value,
        },
    }


def _step_json(step: Step) -> dict[str, Any]:
    return {
        "key": step.key,
        "value": step.value,
        "keys_here": list(step.keys_here),
        "tried": [
            {
                "how": t.how.value,
                "value": t.node.value,
                "source": str(t.node.source),
                "matched": t.matched,
            }
            for t in step.tried
        ],
        "taken": None if step.taken is None else str(step.taken.source),
    }


def render_text(explanation: Explanation) -> str:
    """The explanation for people: one block per descriptor."""
    request, decision, domain = explanation.request, explanation.decision, explanation.domain
    where = f" ({domain.source})" if domain is not None else " (not configured)"
    lines = [f"domain {request.domain}{where}"]
    if decision is not None:
        lines.append(f"the request would get now: {decision.code.name} (nothing was consumed)")
        lines += [f"  {key}: {value}" for key, value in decision.response_headers]
    else:
        lines.append(f"store unavailable, rules' failure_mode decides: {explanation.store_error}")
    for number, item in enumerate(explanation.descriptors, 1):
        lines.append("")
        rejected = decision is not None and decision.code is Code.OVER_LIMIT
        lines += _descriptor_text(number, item, rejected)
    return "\n".join(lines) + "\n"


def _descriptor_text(number: int, item: DescriptorExplanation, rejected: bool) -> list[str]:
    """One descriptor's block; `rejected`: the request as a whole would be rejected."""
    descriptor = item.descriptor
    entries = " ".join(f"{k}={v}" for k, v in descriptor.entries)
    lines = [f"descriptor {number}: {entries}"]
    if item.steps:
        lines.append("  walk:")
        for step in item.steps:
            lines += _step_text(step)
    lines.append(f"  {item.verdict.value}: {item.why}")
    if item.match is not None:
        lines.append(f"  rule: {summary(item.match.rule)}")
        shared = item.match.shared
        if shared is not None:
            patterns = ", ".join(f"'{p}'" for p in shared if p is not None)
            lines.append(f"  share_threshold: every value matching {patterns} shares one counter")
    counter, status = item.counter, item.status
    if counter is not None:
        lines.append(f"  key: {counter.key}")
        if counter.now is not None:
            lines.append(
                f"  now: {counter.now.remaining} remaining, "
                f"fully reset in {_seconds(counter.now.reset_us)}"
            )
        if counter.offered is not None and status is not None:
            reset = _seconds(status.reset_us or 0)
            if counter.offered.admitted:
                verdict, after = "admitted", f"fully reset in {reset}"
                if rejected and _keeps_charge(item, counter.cost):
                    after += " (another limit rejects the request; overdraft: charged all the same)"
                elif rejected:
                    after += " (another limit rejects the request, so nothing is taken)"
            else:
                verdict, after = "rejected", f"retry in {reset}"
                if status.code is Code.OK:
                    verdict += " (shadow mode)"
                elif not rejected:
                    verdict += " (a quota: another quota of the request admits it)"
            lines.append(
                f"  cost {counter.cost}: {verdict} -> {status.code.name}, "
                f"{status.remaining} remaining, {after}"
            )
    elif status is not None:
        remaining = (
            f"{status.remaining} remaining" if item.verdict is Verdict.UNLIMITED else "no limit"
        )
        lines.append(f"  -> {status.code.name}, {remaining}")
    return lines


def _step_text(step: Step) -> list[str]:
    lines = [f"    {step.key}={step.value}"]
    if step.key not in step.keys_here:
        here = f"keys here: {', '.join(step.keys_here)}" if step.keys_here else "nothing nested"
        return [*lines, f"      no key '{step.key}' here ({here}): the walk stops"]
    if not step.tried or step.tried[0].how is not How.EXACT:
        lines.append(f"      {'exact':<9} {step.value!r:<24} not configured")
    for tried in step.tried:
        shown = repr(tried.node.value) if tried.node.value is not None else ""
        outcome = "taken" if tried.node is step.taken else "no match"
        lines.append(f"      {tried.how.value:<9} {shown:<24} {tried.node.source}  {outcome}")
    if step.taken is None:
        lines.append("      no key-only node: the walk stops")
    return lines


def _keeps_charge(item: DescriptorExplanation, cost: int) -> bool:
    """Whether the descriptor's hit stays charged although its request is rejected."""
    limit = item.match.rule.limit if item.match is not None else None
    return limit is not None and cost > 0 and keeps_charge(Hit("", limit, cost), rejected=True)


def _seconds(us: int) -> str:
    return f"{us / 1_000_000:.3f}s"
