"""The RLQS front door's logic, transport-free: one QuotaStream per Envoy stream turns its
usage reports into bucket actions. Demand is kept in a DemandStore (shared by replicas
through Redis); the split is core.quota_share's; time comes from an injectable clock.

A report's demand is measured on our clock, between the arrivals of an Envoy's reports of a
bucket (Envoy sends time_elapsed in whole seconds only), unless that spans lost reports:
then over Envoy's time_elapsed. An Envoy is known by its `client`
name, which the transport takes from the stream's `x-rlqs-client` metadata when set (a
replica restart then loses nothing: the next replica finds its demand), else the peer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import structlog

from ratelimitd.core import quota_share
from ratelimitd.core.quota_rules import resolve
from ratelimitd.model.messages import InvalidRequestError
from ratelimitd.model.observer import NO_OBSERVER, Observer
from ratelimitd.model.quota import (
    Assignment,
    BucketAction,
    BucketId,
    Demand,
    QuotaReport,
    TokenBucket,
    Usage,
)
from ratelimitd.model.rules import Blanket, Config, Limit, Rule
from ratelimitd.storage.base import StoreError
from ratelimitd.storage.demand import DemandStore

log = structlog.get_logger(__name__)

# The reporting interval assumed until an Envoy's second report shows it: Envoy 1.39 reports
# every 5 s whatever its reporting_interval says (filter_persistence.cc hardcodes it), and a
# first assignment living less than that would lapse before the second report renews it.
FIRST_INTERVAL_S = 5.0
# Clamp of a measured interval: a stalled stream must not make assignments live for hours.
MAX_INTERVAL_S = 300.0


def demand_key(domain: str, bucket: BucketId) -> str:
    """The demand store's name of a bucket: unambiguous whatever its keys and values hold."""
    return "\x1f".join([domain, *(f"{k}\x1e{v}" for k, v in bucket)])


class Neighbours:
    """The streams of one replica by bucket: a share one Envoy gives up is offered at once to
    the other Envoys of the bucket connected here (others wait for their next report). A
    bucket's shares are computed one at a time here (`lock`): two Envoys answered at once
    would each see the other's old assignment."""

    def __init__(self) -> None:
        self._by_bucket: dict[str, set[QuotaStream]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, key: str) -> asyncio.Lock:
        """The lock of the bucket named `key`."""
        found = self._locks.get(key)
        if found is None:
            found = self._locks[key] = asyncio.Lock()
        return found

    def join(self, key: str, stream: QuotaStream) -> None:
        """`stream` reports the bucket named `key`."""
        self._by_bucket.setdefault(key, set()).add(stream)

    def leave(self, stream: QuotaStream) -> None:
        """`stream` ended."""
        for key in [k for k, streams in self._by_bucket.items() if stream in streams]:
            streams = self._by_bucket[key]
            streams.discard(stream)
            if not streams:
                del self._by_bucket[key]
                self._locks.pop(key, None)

    def others(self, key: str, stream: QuotaStream) -> list[QuotaStream]:
        """The other streams reporting the bucket."""
        return [s for s in self._by_bucket.get(key, ()) if s is not stream]


Push = Callable[[list[BucketAction]], None]


@dataclass(eq=False, slots=True)
class QuotaStream:
    """One Envoy's stream: its domain (named by the first report) and, per bucket, when it
    last reported it and the token bucket it was last assigned. `push` sends actions the
    Envoy did not ask for (a share offered when another Envoy's shrank)."""

    client: str
    config: Callable[[], Config]
    demand: DemandStore
    clock_us: Callable[[], int]
    neighbours: Neighbours = field(default_factory=Neighbours)
    push: Push | None = None
    observer: Observer = NO_OBSERVER
    domain: str | None = None
    _seen: dict[BucketId, int] = field(default_factory=dict)
    _sent: dict[BucketId, TokenBucket] = field(default_factory=dict)
    # Buckets whose share is held below its target by the others' assignments, with their
    # demand key and limit: `recheck` offers them what other replicas' Envoys gave up.
    _waiting: dict[BucketId, tuple[str, Limit]] = field(default_factory=dict)
    _told_unconfigured: bool = False

    async def report(self, domain: str, usages: Sequence[Usage]) -> list[BucketAction]:
        """The actions answering one usage report. InvalidRequestError when the stream's
        first report names no domain."""
        if self.domain is None:
            if not domain:
                raise InvalidRequestError("the first usage report of a stream names no domain")
            self.domain = domain
        now = self.clock_us()
        config = self.config()
        actions: list[BucketAction] = []
        for usage in usages:
            target = resolve(config, self.domain, usage.bucket)
            if target is None:
                if not self._told_unconfigured:  # once per stream, not per bucket
                    self._told_unconfigured = True
                    log.warning(
                        "rlqs_domain_not_configured", domain=self.domain, client=self.client
                    )
                self._seen.pop(usage.bucket, None)
                self._sent.pop(usage.bucket, None)
                actions.append(BucketAction(usage.bucket, None))
                continue
            if isinstance(target, Blanket):
                interval = self._interval(usage.bucket, now, None)
                self._seen[usage.bucket] = now
                assignment = Assignment(target, quota_share.ttl_seconds(interval))
            else:
                assert target.limit is not None  # resolve() answers unlimited rules with a Blanket
                try:
                    assignment = await self._share(usage, target, target.limit, now)
                except StoreError as exc:
                    # No answer: Envoy keeps the last assignment until its TTL, then its
                    # expired_assignment_behavior decides.
                    log.warning("rlqs_demand_unavailable", error=str(exc))
                    continue
            actions.append(BucketAction(usage.bucket, assignment))
        return actions

    def close(self) -> None:
        """The stream ended: no more offers to it."""
        self.neighbours.leave(self)

    def _interval(self, bucket: BucketId, now: int, stored: Demand | None) -> float:
        """Seconds since the Envoy's previous report of the bucket (to this replica, else to
        any: a reconnected stream), or the last interval known, or FIRST_INTERVAL_S."""
        previous = self._seen.get(bucket, stored.seen_us if stored else None)
        if previous is not None and now > previous:
            return min((now - previous) / 1_000_000, MAX_INTERVAL_S)
        return stored.interval_s if stored else FIRST_INTERVAL_S

    async def _share(self, usage: Usage, rule: Rule, limit: Limit, now: int) -> Assignment:
        assert self.domain is not None
        key = demand_key(self.domain, usage.bucket)
        self.neighbours.join(key, self)
        async with self.neighbours.lock(key):
            assignment, live = await self._share_locked(key, usage, limit, now)
        self.observer.quota_report(
            QuotaReport(
                rule.domain,
                rule.label,
                usage.allowed,
                usage.denied,
                len(live),
                sum(d.rate or 0.0 for d in live),
                sum(d.assigned for d in live),
                limit.requests_per_unit / limit.window_seconds,
            )
        )
        return assignment

    async def _share_locked(
        self, key: str, usage: Usage, limit: Limit, now: int
    ) -> tuple[Assignment, list[Demand]]:
        demands = await self.demand.demands(key)
        stored = demands.get(self.client)
        known = usage.bucket in self._seen or stored is not None
        interval = self._interval(usage.bucket, now, stored)
        if usage.elapsed_s and interval > usage.elapsed_s + 1:
            # Reports were lost in between (no stream, a replica restarting): Envoy counted
            # only since it last built one, time_elapsed ago (whole seconds, truncated).
            interval = usage.elapsed_s + 0.5
        self._seen[usage.bucket] = now
        rate = None  # the bucket's first report: its counts cover no known time yet
        if known:
            measured = (usage.allowed + usage.denied) / interval
            rate = quota_share.smoothed(stored.rate if stored else None, measured)
        demands[self.client] = Demand(
            self.client, rate, now, interval, stored.assigned if stored else 0.0
        )
        previous = self._sent.get(usage.bucket)
        assignment, live = await self._assign(key, usage.bucket, limit, demands, now)
        if previous is not None and assignment.strategy != previous:
            await self._offer_to_neighbours(key, usage.bucket, limit, now)
        return assignment, live

    async def _assign(
        self, key: str, bucket: BucketId, limit: Limit, demands: dict[str, Demand], now: int
    ) -> tuple[Assignment, list[Demand]]:
        """Split `limit` by `demands` (this client's up to date), record this client's
        share; its assignment, and the live demands with it as assigned."""
        mine = demands[self.client]
        live = [d for d in demands.values() if quota_share.is_live(d, now)]
        forget = [d.client for d in demands.values() if not quota_share.is_live(d, now)]
        fraction = quota_share.fraction_for(self.client, live)
        share = quota_share.settle(
            self._sent.get(bucket), quota_share.token_bucket(limit, fraction, mine.interval_s)
        )
        self._sent[bucket] = share
        if fraction < quota_share.fractions(live)[self.client]:
            self._waiting[bucket] = (key, limit)
        else:
            self._waiting.pop(bucket, None)
        log.debug(
            "rlqs_share",
            client=self.client,
            bucket=key,
            demand=mine.rate,
            target=round(fraction, 4),
            tokens_per_fill=share.tokens_per_fill,
            max_tokens=share.max_tokens,
        )
        ttl = quota_share.ttl_seconds(mine.interval_s)
        assigned = share.tokens_per_fill / max(limit.requests_per_unit, 1)
        recorded = replace(mine, assigned=assigned)
        await self.demand.record(key, recorded, forget, ttl)
        live = [recorded if d.client == self.client else d for d in live]
        return Assignment(share, ttl), live

    async def _offer_to_neighbours(
        self, key: str, bucket: BucketId, limit: Limit, now: int
    ) -> None:
        for stream in self.neighbours.others(key, self):
            await stream.offer(key, bucket, limit, now)

    async def recheck(self) -> None:
        """Offer again every share held below its target: an Envoy on another replica may
        have given up what it held since (no push reaches across replicas)."""
        now = self.clock_us()
        for bucket, (key, limit) in list(self._waiting.items()):
            async with self.neighbours.lock(key):
                await self.offer(key, bucket, limit, now)

    async def offer(self, key: str, bucket: BucketId, limit: Limit, now: int) -> None:
        """Split the bucket again for this Envoy from the demands as they stand, and push
        the assignment if it grew (a smaller one waits for the Envoy's own report, which
        brings its demand up to date)."""
        previous = self._sent.get(bucket)
        if self.push is None or previous is None:
            return
        demands = await self.demand.demands(key)
        mine = demands.get(self.client)
        if mine is None:
            return
        live = [d for d in demands.values() if quota_share.is_live(d, now)]
        fraction = quota_share.fraction_for(self.client, live)
        grown = quota_share.token_bucket(limit, fraction, mine.interval_s)
        if quota_share.settle(previous, grown).tokens_per_fill <= previous.tokens_per_fill:
            return
        assignment, _ = await self._assign(key, bucket, limit, demands, now)
        self.push([BucketAction(bucket, assignment)])
