"""The transport-free core: a Request in, a Decision out.

Matches each descriptor to a rule, drops replaced rules, sends every remaining counter of the
request to the store as one all-or-nothing batch, and turns the outcomes into statuses and
headers. Knows nothing of gRPC, HTTP or Redis clients.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import cast

import structlog

from ratelimitd.algorithms import ALGORITHMS, Hit, Outcome, rejects
from ratelimitd.algorithms.concurrency import Claim
from ratelimitd.core import headers, keys, problem
from ratelimitd.core.headers import HeaderMode, HeaderPlan
from ratelimitd.core.matcher import Match, match
from ratelimitd.core.overlimit_cache import OverLimitCache
from ratelimitd.core.plan import Plan
from ratelimitd.core.problem import BodyMode
from ratelimitd.core.validation import DEFAULT_REQUEST_LIMITS, RequestLimits, validate
from ratelimitd.model.messages import (
    UNLIMITED_REMAINING,
    Code,
    Decision,
    Descriptor,
    Request,
    Result,
    Status,
    StoreUnavailableError,
)
from ratelimitd.model.observer import NO_OBSERVER, Observer
from ratelimitd.model.rules import Config, Domain, FailureMode, Limit, Rule, key_path
from ratelimitd.storage.base import Store, StoreError

log = structlog.get_logger(__name__)

OK_STATUS = Status(Code.OK)
# Looked up once: an enum member costs an attribute lookup on its class each time it is named.
_OK, _OVER = Code.OK, Code.OVER_LIMIT
_WITHIN, _NEAR, _OVER_RESULT = Result.WITHIN_LIMIT, Result.NEAR_LIMIT, Result.OVER_LIMIT
_SHADOW_OVER, _CACHE_HIT = Result.SHADOW_OVER_LIMIT, Result.LOCAL_CACHE_HIT
# Builds a NamedTuple from its fields without the Python-level __new__ it generates.
_new = tuple.__new__
# As the reference's NEAR_LIMIT_RATIO: near once 80% of a limit is used.
DEFAULT_NEAR_LIMIT_RATIO = 0.8
# A rule denying because the store failed asks the client to retry after this long.
FAILURE_RETRY_US = 1_000_000
# The plan's memo entry of its last answer from the over-limit cache.
_CACHED = "engine.cached_answer"
# At most one store-failure log line per this many seconds; the rest are counted.
_FAILURE_LOG_INTERVAL_S = 1.0


class Engine:
    """Decides requests against the current config snapshot and a store; reports every
    decision to `observer`."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        header_mode: HeaderMode = HeaderMode.XRATELIMIT,
        key_prefix: str = keys.DEFAULT_PREFIX,
        shadow_mode: bool = False,
        near_limit_ratio: float = DEFAULT_NEAR_LIMIT_RATIO,
        body_mode: BodyMode = BodyMode.NONE,
        over_limit_cache: OverLimitCache | None = None,
        request_limits: RequestLimits = DEFAULT_REQUEST_LIMITS,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        # The rules in force: assigning a new config (a reload) takes effect at once.
        self.config = config
        self.store = store
        self._header_mode = header_mode
        self._key_prefix = key_prefix
        self._shadow_mode = shadow_mode
        self._body_mode = body_mode
        self._cache = over_limit_cache
        self._request_limits = request_limits
        self._observer = observer
        # A limit is near when fewer than this share of its capacity remains.
        self._near_fraction = 1.0 - near_limit_ratio
        self._unmeasured = HeaderPlan((), header_mode)
        self._failure_log_at = 0.0
        self._failures_unlogged = 0

    async def should_rate_limit(self, request: Request) -> Decision:
        """Decide one request; raise InvalidRequestError for malformed input."""
        return await self.decide(self.plan(request))

    async def decide(self, plan: Plan) -> Decision:
        """Evaluate a request's plan against the store (or the local over-limit cache)."""
        decision = plan.fixed
        if decision is None:
            cache = self._cache
            # An overdraft charge must reach the store, whatever the other limits answer.
            if cache is not None and not plan.charges_overdraft:
                decision = self._answer_from_cache(plan, cache)
            if decision is None:
                # The store call is awaited here, not in a helper: every coroutine frame
                # between the transport and the store is resumed once per request.
                sent_at = cache.clock() if cache is not None else 0
                started = time.perf_counter()
                try:
                    outcomes = await self.store.apply(plan.hits)
                except StoreError as exc:
                    self._log_failure(exc)
                    decision = self._fail(plan, time.perf_counter() - started)
                else:
                    store_s = time.perf_counter() - started
                    if cache is not None:
                        self._remember_rejections(plan.hits, outcomes, sent_at)
                    decision = self._conclude_outcomes(plan, outcomes, store_s)
        self._observer.decided(decision, plan.details)
        return decision

    def conclude(self, plan: Plan, outcomes: Sequence[Outcome]) -> Decision:
        """The answer a plan gets when the store reports `outcomes` (one per hit), without
        asking the store or the over-limit cache: how explain shows what a request would get."""
        return plan.fixed or self._conclude_outcomes(plan, outcomes, 0.0)

    def _conclude(
        self,
        plan: Plan,
        statuses: list[Status],
        over: bool,
        store_s: float,
        header_plan: HeaderPlan | None = None,
    ) -> Decision:
        """The decision, headers and body from the final statuses; `over` says whether one
        of them is OVER_LIMIT; `header_plan` replaces the plan's own."""
        # Global shadow mode: statuses keep their verdicts, the answer is OK (as the reference).
        if over and self._shadow_mode:
            over = False
        fields = (header_plan or plan.header_plan).build(statuses, over)
        if not over:
            return _new(Decision, (_OK, tuple(statuses), fields, b"", store_s))
        body = b""
        if self._body_mode is not BodyMode.NONE:
            fields += (("Content-Type", problem.CONTENT_TYPE),)
            body = problem.problem_json(statuses, headers.retry_after_s(statuses))
        return _new(Decision, (_OVER, tuple(statuses), fields, body, store_s))

    def plan(self, request: Request) -> Plan:
        """What the config makes of a request, before any counter is read; raises
        InvalidRequestError for malformed input."""
        validate(request, self._request_limits)
        domain = self.config.domains.get(request.domain)
        count = len(request.descriptors)
        if domain is None:
            return Plan(
                None,
                (None,) * count,
                (False,) * count,
                (OK_STATUS,) * count,
                (),
                (),
                (),
                HeaderPlan((), self._header_mode),
                self._near_fraction,
            )
        matched = tuple(_rule_for(domain, d) for d in request.descriptors)
        names = set().union(*(m.rule.replaces for m in matched if m is not None))
        replaced = tuple(
            m is not None and m.rule.name is not None and m.rule.name in names for m in matched
        )
        statuses, hits, hit_at = self._hits(domain, request, matched, replaced)
        slots = tuple(
            (i, m.rule, Claim(self._slot_key(domain, d, m), m.rule.concurrency))
            for i, (d, m) in enumerate(zip(request.descriptors, matched, strict=True))
            if m is not None and m.rule.concurrency is not None and not replaced[i]
        )
        details = tuple(
            key_path(d.entries) if m is not None and m.rule.detailed_metric else None
            for d, m in zip(request.descriptors, matched, strict=True)
        )
        measured = HeaderPlan([(i, rule) for i, _, rule in hit_at], self._header_mode)
        return Plan(
            domain.name,
            matched,
            replaced,
            tuple(statuses),
            tuple(hits),
            tuple(hit_at),
            details,
            measured,
            self._near_fraction,
            slots,
        )

    def _slot_key(self, domain: Domain, descriptor: Descriptor, found: Match) -> str:
        assert found.rule.concurrency is not None
        return keys.slot_key(
            domain.name, descriptor.entries, found.rule.concurrency, found.shared, self._key_prefix
        )

    def _hits(
        self,
        domain: Domain,
        request: Request,
        matched: tuple[Match | None, ...],
        replaced: tuple[bool, ...],
    ) -> tuple[list[Status], list[Hit], list[tuple[int, Limit, Rule]]]:
        """The statuses known without a counter, the hits to evaluate and, per hit, its
        status index, limit and rule."""
        statuses: list[Status] = [OK_STATUS] * len(request.descriptors)
        hits: list[Hit] = []
        hit_at: list[tuple[int, Limit, Rule]] = []
        # Under --quota-mode (the domain's defaults) a descriptor without a limit counts as a
        # quota that passed.
        quota_passes = False
        for i, (descriptor, found) in enumerate(zip(request.descriptors, matched, strict=True)):
            if found is None or replaced[i]:
                quota_passes = True
                continue
            rule, shared = found
            if rule.concurrency is not None:
                continue  # a slot, not a counter: the plan's `slots`, for the middleware
            if rule.limit is None:  # unlimited: not a quota that counts, either way
                statuses[i] = Status(Code.OK, None, UNLIMITED_REMAINING)
                continue
            cost = descriptor.hits_addend
            if cost is None:
                cost = request.hits_addend or 1
            tag = ALGORITHMS[rule.limit.algorithm].key_tag
            key = keys.counter_key(
                domain.name, descriptor.entries, rule.limit, tag, shared, self._key_prefix
            )
            hits.append(Hit(key, rule.limit, cost, rule.shadow_mode, rule.quota_mode))
            hit_at.append((i, rule.limit, rule))
        quota_passes = quota_passes and domain.defaults.quota_mode
        # A shadow quota rule always passes (its status is OK, as in the reference).
        if quota_passes or any(hit.quota and hit.shadow for hit in hits):
            # A quota that passes whatever happens: no quota hit can reject the request, so
            # to the store they are shadow hits (their statuses still tell their verdicts).
            hits = [hit._replace(shadow=True) if hit.quota else hit for hit in hits]
        return statuses, hits, hit_at

    def _answer_from_cache(self, plan: Plan, cache: OverLimitCache) -> Decision | None:
        """The request rejected locally if every one of its limits is known to be over and
        that rejects it, else None: the store is asked, and every limit gets its own verdict
        (one not known to be over would have to be read to tell it)."""
        now = cache.clock()
        outcomes: list[Outcome] = []
        for hit in plan.hits:
            # A check (cost 0) is rejected exactly when a cost of 1 would be. Shadow hits are
            # never cached: their requests always reach the store.
            cached = None if hit.shadow else cache.lookup(hit.key, hit.cost or 1, now)
            if cached is None:
                return None
            # The wait in whole seconds, rounded up, as every answer shows it: so answers
            # within one second are one answer, decided once (never earlier than the truth).
            wait_us = -(-cached.reset_us // 1_000_000) * 1_000_000
            outcomes.append(_new(Outcome, (False, cached.remaining, wait_us)))
        kept = cast("tuple[list[Outcome], Decision] | None", plan.memo.get(_CACHED))
        if kept is not None and kept[0] == outcomes:
            return kept[1]
        if not rejects(plan.hits, outcomes):
            return None  # an admitted request must commit its charges
        decision = self._conclude_outcomes(plan, outcomes, 0.0, _CACHE_HIT)
        plan.memo[_CACHED] = (outcomes, decision)
        return decision

    def _remember_rejections(
        self, hits: Sequence[Hit], outcomes: Sequence[Outcome], sent_at: int
    ) -> None:
        assert self._cache is not None
        for outcome in outcomes:
            if not outcome[0]:
                break
        else:
            return  # all admitted: the usual case, and nothing to remember
        for hit, outcome in zip(hits, outcomes, strict=True):
            # A key hit twice in one request was judged after the request's own (uncommitted)
            # first hit, so its reset says nothing about a request on its own: skip it.
            if outcome.admitted or hit.shadow or sum(h.key == hit.key for h in hits) > 1:
                continue
            # An overdraft rejection reports when a cost of 1 passes again (the debt paid).
            cost = 1 if hit.limit.overdraft else max(hit.cost, 1)
            self._cache.record(hit.key, cost, outcome.remaining, outcome.reset_us, sent_at)

    def _conclude_outcomes(
        self,
        plan: Plan,
        outcomes: Sequence[Outcome],
        store_s: float,
        over_result: Result | None = None,
    ) -> Decision:
        """The decision on one outcome per hit of `plan`; `over_result` replaces the result
        of exceeded limits (the local over-limit cache's answers)."""
        statuses = list(plan.statuses)
        over = False
        # strict=False: one outcome per hit by construction, and strict=True costs a third of
        # the loop on this path.
        for (i, _, rule), (admitted, remaining, reset_us), near_below in zip(
            plan.hit_at, outcomes, plan.near_below, strict=False
        ):
            if remaining > UNLIMITED_REMAINING:
                remaining = UNLIMITED_REMAINING
            if admitted:
                result = _NEAR if remaining < near_below else _WITHIN
                statuses[i] = _new(Status, (_OK, rule, remaining, reset_us, result))
            elif rule.shadow_mode:
                # A shadow rule reports what it would have done but never rejects.
                statuses[i] = Status(_OK, rule, remaining, reset_us, _SHADOW_OVER)
            else:
                over = True
                result = over_result or (_SHADOW_OVER if self._shadow_mode else _OVER_RESULT)
                statuses[i] = Status(_OVER, rule, remaining, reset_us, result)
        if over and plan.has_quota:
            # An exceeded quota limit rejects only together with all of the request's.
            over = rejects(plan.hits, outcomes)
        return self._conclude(plan, statuses, over, store_s)

    def _fail(self, plan: Plan, store_s: float) -> Decision:
        """The decision when the store failed: each rule's failure mode, or
        StoreUnavailableError when one leaves it to Envoy."""
        if any(rule.failure_mode is FailureMode.UNAVAILABLE for _, _, rule in plan.hit_at):
            raise StoreUnavailableError("the store is unavailable")
        statuses = list(plan.statuses)
        over = False
        for i, _, rule in plan.hit_at:
            if rule.failure_mode is FailureMode.DENY:
                over = True
                statuses[i] = Status(
                    Code.OVER_LIMIT, rule, 0, FAILURE_RETRY_US, Result.FAILURE_DENIED
                )
            else:
                statuses[i] = Status(Code.OK, rule, 0, None, Result.FAILURE_ALLOWED)
        # No counter was read: rate limit headers would state numbers nobody measured.
        return self._conclude(plan, statuses, over, store_s, self._unmeasured)

    def _log_failure(self, exc: StoreError) -> None:
        now = time.monotonic()
        if now - self._failure_log_at < _FAILURE_LOG_INTERVAL_S:
            self._failures_unlogged += 1
            return
        log.warning(
            "store_failure", error=str(exc), failure_modes_applied=1 + self._failures_unlogged
        )
        self._failure_log_at = now
        self._failures_unlogged = 0


def _rule_for(domain: Domain, descriptor: Descriptor) -> Match | None:
    """The rule a descriptor gets in `domain`: Envoy's limit override if it carries one,
    else the config's match; None when no limit applies."""
    override = descriptor.limit
    if override is None:
        return match(domain.root, descriptor.entries)
    # Envoy's per-descriptor override replaces config matching (for a known domain).
    path = key_path(descriptor.entries)
    per_unit = override.requests_per_unit
    limit = Limit(domain.defaults.algorithm, per_unit, override.unit, per_unit)
    rule = Rule(
        domain=domain.name,
        full_key=f"{domain.name}.{path}",
        limit=limit,
        name=None,
        replaces=frozenset(),
        shadow_mode=False,
        detailed_metric=False,
        failure_mode=domain.defaults.failure_mode,
        source=None,
        quota_mode=domain.defaults.quota_mode,
    )
    return Match(rule, None)
