"""The RLQS allocator's behaviour on a fake clock: Envoys (QuotaStreams) report usage of one
bucket whose rule is the fleet quota, and get their share back. Demand lives in the memory
store, and in a real Redis for the replica tests."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ratelimitd.core import quota_share
from ratelimitd.core.quota_service import Neighbours, QuotaStream, demand_key
from ratelimitd.model.quota import (
    Assignment,
    BucketAction,
    BucketId,
    TokenBucket,
    Usage,
    bucket_id,
)
from ratelimitd.model.rules import Blanket, Config
from ratelimitd.storage.clock import FakeClock
from ratelimitd.storage.demand import DemandStore, MemoryDemand, RedisDemand
from tests.config_files import load_text

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]

CONFIG = """
domain: web
descriptors:
  - key: tenant
    value: acme
    rate_limit: {unit: minute, requests_per_unit: 600}
  - key: tenant
    value: free
    rate_limit: {unlimited: true}
  - key: tenant
    value: banned
    rate_limit: {unit: minute, requests_per_unit: 0}
rlqs:
  bucket_keys: [tenant]
  unmatched: deny_all
"""
ACME = bucket_id({"tenant": "acme", "route": "/search"})
INTERVAL = 1.0


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_text(tmp_path, CONFIG)


class Fleet:
    """Envoys reporting one bucket, each through its own stream, all on one clock."""

    def __init__(self, config: Config, demand: DemandStore, clock: FakeClock, run: Run[Any]):
        self.config, self.demand, self.clock, self.run = config, demand, clock, run
        self.streams: dict[str, QuotaStream] = {}
        self.neighbours = Neighbours()  # of the one replica, unless told otherwise
        self.pushed: dict[str, list[BucketAction]] = {}

    def connect(
        self, client: str, demand: DemandStore | None = None, replica: Neighbours | None = None
    ) -> None:
        """A new stream for `client` (a reconnect replaces the old one); another demand
        store, or `replica`'s neighbours, stand for another replica."""
        neighbours = replica or (self.neighbours if demand in (None, self.demand) else Neighbours())
        pushed = self.pushed.setdefault(client, [])
        self.streams[client] = QuotaStream(
            client,
            lambda: self.config,
            demand or self.demand,
            self.clock,
            neighbours,
            pushed.extend,
        )

    def report(
        self, client: str, allowed: int, denied: int = 0, bucket: BucketId = ACME
    ) -> BucketAction:
        actions: list[BucketAction] = self.run(
            self.streams[client].report("web", [Usage(bucket, allowed, denied)])
        )
        assert len(actions) == 1
        return actions[0]

    def bucket(self, client: str, allowed: int, denied: int = 0) -> TokenBucket:
        assignment = self.report(client, allowed, denied).assignment
        assert assignment is not None
        assert isinstance(assignment.strategy, TokenBucket)
        return assignment.strategy

    def interval(self, loads: dict[str, int]) -> dict[str, TokenBucket]:
        """One reporting interval: time passes, every Envoy reports its load."""
        self.clock.advance(INTERVAL)
        return {client: self.bucket(client, load) for client, load in loads.items()}


@pytest.fixture
def fleet(config: Config, run: Run[Any]) -> Fleet:
    return Fleet(config, MemoryDemand(), FakeClock(), run)


def per_minute(buckets: dict[str, TokenBucket]) -> int:
    assert {b.fill_interval_s for b in buckets.values()} == {60}
    return sum(b.tokens_per_fill for b in buckets.values())


def test_a_lone_envoy_gets_the_whole_quota_as_envoy_enforces_it(fleet: Fleet) -> None:
    fleet.connect("a")
    first = fleet.report("a", 1)
    # Until a second report shows the interval, Envoy's 5 s is assumed: capacity for half
    # an interval of 10/s, a TTL of three intervals.
    assert first.assignment == Assignment(TokenBucket(25, 600, 60), 15)


def test_a_share_grows_only_into_what_the_others_are_not_assigned(fleet: Fleet) -> None:
    """Envoys are answered one at a time: b, which arrived second, waits for a's share to
    shrink before its own grows, so the assignments never sum past the quota."""
    for client in "ab":
        fleet.connect(client)
        fleet.report(client, 1)
    for _ in range(4):
        buckets = fleet.interval({"a": 20, "b": 20})
        # The floor is granted past the others' assignments: an Envoy always admits some.
        assert per_minute(buckets) <= 600 * (1 + quota_share.FLOOR_FRACTION)


def test_equal_demand_splits_evenly(fleet: Fleet) -> None:
    for client in "ab":
        fleet.connect(client)
        fleet.report(client, 1)
    for _ in range(3):
        buckets = fleet.interval({"a": 20, "b": 20})
    assert buckets["a"].tokens_per_fill == buckets["b"].tokens_per_fill == 300
    assert per_minute(buckets) == 600


def test_four_to_one_demand_gets_a_proportional_share_above_the_floor(fleet: Fleet) -> None:
    for client in "ab":
        fleet.connect(client)
        fleet.report(client, 1)
    for _ in range(3):
        buckets = fleet.interval({"a": 40, "b": 10})
    # 10% split evenly (30 each), 90% 4:1 (432 and 108).
    assert buckets["a"].tokens_per_fill == 462
    assert buckets["b"].tokens_per_fill == 138
    assert per_minute(buckets) == 600


def test_an_envoy_that_just_started_gets_the_floor(fleet: Fleet) -> None:
    fleet.connect("busy")
    fleet.report("busy", 1)
    fleet.interval({"busy": 50})
    fleet.connect("new")
    new = fleet.bucket("new", 1)
    # No demand known yet: the floor, 10% split between the two reporters.
    assert new.tokens_per_fill == 30
    assert new.max_tokens >= 1


def test_a_share_given_up_is_pushed_to_the_other_envoys_at_once(fleet: Fleet) -> None:
    for client in "ab":
        fleet.connect(client)
        fleet.report(client, 1)
    fleet.clock.advance(INTERVAL)
    assert fleet.bucket("b", 20).tokens_per_fill == 30  # a still holds the whole quota
    assert fleet.bucket("a", 20).tokens_per_fill == 300  # a shrinks...
    [offer] = fleet.pushed["b"]  # ... and b gets the rest unasked, not a report later
    assert offer.bucket == ACME
    assert offer.assignment is not None
    assert offer.assignment.strategy == TokenBucket(3, 300, 60)
    assert fleet.pushed["a"] == []


def test_shares_rebalance_when_demand_moves(fleet: Fleet) -> None:
    for client in "ab":
        fleet.connect(client)
        fleet.report(client, 1)
    before = fleet.interval({"a": 40, "b": 10})
    for _ in range(6):
        after = fleet.interval({"a": 10, "b": 40})
    assert before["a"].tokens_per_fill > before["b"].tokens_per_fill
    assert after["b"].tokens_per_fill > 2 * after["a"].tokens_per_fill
    assert per_minute(after) <= 600


def test_small_moves_keep_the_assignment_so_envoy_keeps_its_tokens(fleet: Fleet) -> None:
    for client in "ab":
        fleet.connect(client)
        fleet.report(client, 1)
    fleet.interval({"a": 20, "b": 20})
    first = fleet.interval({"a": 20, "b": 20})
    second = fleet.interval({"a": 21, "b": 19})
    assert second == first  # identical assignments: Envoy carries its bucket over


def test_an_envoy_that_stops_reporting_is_forgotten_after_the_ttl(fleet: Fleet) -> None:
    for client in "ab":
        fleet.connect(client)
        fleet.report(client, 1)
    fleet.interval({"a": 20, "b": 20})
    for _ in range(quota_share.TTL_INTERVALS + 1):
        alone = fleet.interval({"a": 20})
    assert alone["a"].tokens_per_fill == 600


def test_assignments_live_a_few_reporting_intervals(fleet: Fleet) -> None:
    fleet.connect("a")
    fleet.report("a", 1)
    fleet.clock.advance(10)
    action = fleet.report("a", 100)
    assert action.assignment is not None
    assert action.assignment.ttl_s == 30


def test_blanket_rules_for_unlimited_zero_and_unmatched_buckets(fleet: Fleet) -> None:
    fleet.connect("a")
    for tenant, blanket in [
        ("free", Blanket.ALLOW_ALL),
        ("banned", Blanket.DENY_ALL),
        ("other", Blanket.DENY_ALL),  # unmatched: deny_all
    ]:
        action = fleet.report("a", 1, bucket=bucket_id({"tenant": tenant}))
        assert action.assignment == Assignment(blanket, 15)


def test_buckets_of_a_domain_without_rlqs_are_abandoned(config: Config, run: Run[Any]) -> None:
    stream = QuotaStream("a", lambda: config, MemoryDemand(), FakeClock())
    actions = run(stream.report("elsewhere", [Usage(ACME, 1, 0)]))
    assert actions == [BucketAction(ACME, None)]


def test_the_first_report_must_name_the_domain(config: Config, run: Run[Any]) -> None:
    stream = QuotaStream("a", lambda: config, MemoryDemand(), FakeClock())
    with pytest.raises(ValueError, match="names no domain"):
        run(stream.report("", [Usage(ACME, 1, 0)]))


def test_replicas_share_demand_and_a_restart_loses_nothing(
    config: Config, run: Run[Any], redis_url: str
) -> None:
    """Envoy a talks to replica 1, b to replica 2, both on one Redis: their shares are split
    from both demands. Replica 1 restarts and a reconnects to replica 3: its share follows
    from the demand Redis kept, not from a fresh start."""
    replicas = [RedisDemand(redis_url, timeout=5) for _ in range(3)]
    fleet = Fleet(config, replicas[0], FakeClock(), run)
    try:
        fleet.connect("a", replicas[0])
        fleet.connect("b", replicas[1])
        fleet.report("a", 1)
        fleet.report("b", 1)
        for _ in range(3):
            buckets = fleet.interval({"a": 40, "b": 10})
        assert (buckets["a"].tokens_per_fill, buckets["b"].tokens_per_fill) == (462, 138)
        fleet.connect("a", replicas[2])  # the stream comes back on another replica
        fleet.clock.advance(INTERVAL)
        again = fleet.bucket("a", 40)
        assert again.tokens_per_fill == 462
    finally:
        for replica in replicas:
            run(replica.close())


def test_an_unconfigured_domain_is_logged_once_per_stream(
    config: Config, run: Run[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    stream = QuotaStream("a", lambda: config, MemoryDemand(), FakeClock())
    for _ in range(3):
        run(stream.report("elsewhere", [Usage(ACME, 1, 0), Usage(bucket_id({"x": "1"}), 1, 0)]))
    assert capsys.readouterr().out.count("rlqs_domain_not_configured") == 1


def test_counts_after_lost_reports_cover_envoys_time_elapsed(fleet: Fleet, run: Run[Any]) -> None:
    """Envoy drops the counts of a report it cannot send (no stream): the next one covers
    only its own time_elapsed, not the time since our last report from it."""
    fleet.connect("a")
    fleet.report("a", 1)
    fleet.clock.advance(5)
    fleet.report("a", 100)  # 20/s
    fleet.clock.advance(10)  # a report lost: 100 requests of 5 s gone with it
    run(fleet.streams["a"].report("web", [Usage(ACME, 100, 0, elapsed_s=5)]))
    [demand] = run(fleet.demand.demands(demand_key("web", ACME))).values()
    assert demand.rate == pytest.approx(20 * 0.5 + 100 / 5.5 * 0.5)
    assert demand.interval_s == 5.5


def test_a_share_waiting_on_another_replica_is_rechecked(fleet: Fleet, run: Run[Any]) -> None:
    """No push reaches across replicas: b, held at its floor by a's assignment, is offered
    what a gave up when its stream rechecks, before its next report."""
    fleet.connect("a")
    fleet.connect("b", replica=Neighbours())
    fleet.report("a", 1)
    fleet.report("b", 1)
    fleet.clock.advance(INTERVAL)
    assert fleet.bucket("b", 20).tokens_per_fill == 30  # a still holds the quota
    assert fleet.bucket("a", 20).tokens_per_fill == 300  # a shrinks, on its replica
    assert fleet.pushed["b"] == []
    run(fleet.streams["b"].recheck())
    [offer] = fleet.pushed["b"]
    assert offer.assignment is not None
    assert offer.assignment.strategy == TokenBucket(3, 300, 60)
    run(fleet.streams["b"].recheck())
    assert len(fleet.pushed["b"]) == 1  # at its target: nothing more to offer
