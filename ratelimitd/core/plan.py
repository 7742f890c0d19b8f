"""A request as the config sees it: what the engine works out once per distinct request and
reuses for every decision of it."""

from __future__ import annotations

from ratelimitd.algorithms import Hit
from ratelimitd.algorithms.concurrency import Claim
from ratelimitd.core.headers import HeaderPlan
from ratelimitd.core.matcher import Match
from ratelimitd.model.messages import Code, Decision, Status
from ratelimitd.model.rules import Limit, Rule


class Plan:
    """A request as the config sees it, made once per distinct request and kept: statuses
    known without counters (no limit, unlimited, replaced), the hits to evaluate with the
    status index each fills, and what every decision of it shares (its headers' fixed parts,
    each hit's near-limit threshold, the whole answer when nothing needs a counter).

    `domain` is the request's domain if the config has it; per descriptor, `matches` holds
    the rule it reached (Envoy's limit override, the config's match, or None) and `replaced`
    whether another matched rule's `replaces` drops that rule; `details` holds, per descriptor,
    its values as `key_value.key_value` when its rule asks for per-value metrics;
    `charges_overdraft` says whether a hit charges a limit with overdraft (such a request
    must reach the store, whatever the local over-limit cache knows); `has_quota` whether a
    hit is a quota one (whether the request is rejected then takes all of them). `memo` is
    for the engine and the layers around it to keep what they derive from the plan (the
    last answer from the over-limit cache, the wire encoder's current_limit fields and last
    response): it lives and dies with the plan.
    """

    __slots__ = (
        "charges_overdraft",
        "details",
        "domain",
        "fixed",
        "has_quota",
        "header_plan",
        "hit_at",
        "hits",
        "matches",
        "memo",
        "near_below",
        "replaced",
        "slots",
        "statuses",
    )

    def __init__(
        self,
        domain: str | None,
        matches: tuple[Match | None, ...],
        replaced: tuple[bool, ...],
        statuses: tuple[Status, ...],
        hits: tuple[Hit, ...],
        hit_at: tuple[tuple[int, Limit, Rule], ...],
        details: tuple[str | None, ...],
        header_plan: HeaderPlan,
        near_fraction: float,
        slots: tuple[tuple[int, Rule, Claim], ...] = (),
    ) -> None:
        self.domain = domain
        # The request's concurrency limits, as (descriptor index, rule, claim): the engine
        # never takes them (only the in-app middleware sees a request end, to give one back).
        self.slots = slots
        self.matches = matches
        self.replaced = replaced
        self.statuses = statuses
        self.hits = hits
        self.hit_at = hit_at
        self.details = details
        self.header_plan = header_plan
        # Admitted with fewer than this many left is near the limit.
        self.near_below = tuple(near_fraction * limit.burst for _, limit, _ in hit_at)
        self.charges_overdraft = any(hit.limit.overdraft and hit.cost for hit in hits)
        self.has_quota = any(hit.quota for hit in hits)
        # Without a counter to read, every decision of the plan is this one.
        self.fixed = (
            None if hits else Decision(Code.OK, statuses, header_plan.build(statuses, False))
        )
        self.memo: dict[str, object] = {}
