"""Property: the memory store, the Redis scripts and the Redis Cluster store are the same
functions. For random sequences of time steps, costs and descriptor sets, they give identical
decisions, remaining values and reset times, for every algorithm and for requests mixing them.

The requests of a step reach Redis concurrently, so batching is exercised too: a batch
decides as the same requests one after another would. The same holds on a cluster for
requests within one hash slot each. A request spanning slots is settled in Python from its
parts' replies and refunded (storage/cluster.py); those are sent one at a time, since within
a batch a refund arrives one round trip late, and without token buckets, whose refunds re-base
the bucket and may round a later answer differently (both as the cluster store documents).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from typing import TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ratelimitd.algorithms import ALGORITHMS, Hit, Outcome
from ratelimitd.model.rules import Limit, Unit
from ratelimitd.storage.base import Store
from ratelimitd.storage.clock import FakeClock
from ratelimitd.storage.cluster import ClusterStore
from ratelimitd.storage.memory import MemoryStore
from ratelimitd.storage.redis import RedisStore
from tests.conftest import RedisClusterServers, RedisServer
from tests.stores import S, limit

# (requests_per_unit, unit, burst, unit_multiplier)
SHAPES = [
    (10, Unit.MINUTE, None, 1),
    (3, Unit.SECOND, 7, 1),
    (7, Unit.HOUR, 2, 1),
    (1000, Unit.DAY, None, 1),
    (0, Unit.MINUTE, None, 1),
    (1, Unit.SECOND, None, 1),
    (5, Unit.SECOND, None, 7),  # 5 per 7 seconds
    (4, Unit.MINUTE, 6, 3),  # 4 per 3 minutes
]
PLAIN = [
    limit(name, per_unit, unit, burst if ALGORITHMS[name].uses_burst else None, multiplier)
    for name in sorted(ALGORITHMS)
    for per_unit, unit, burst, multiplier in SHAPES
]
# Calendar windows (fixed windows only): days in Berlin, weeks in New York.
PLAIN += [
    dataclasses.replace(limit("fixed_window", 6, Unit.DAY), calendar_zone="Europe/Berlin"),
    dataclasses.replace(limit("fixed_window", 9, Unit.WEEK), calendar_zone="America/New_York"),
]
# The same with overdraft: charges past the limit kept, as debt of at most 4.
LIMITS = PLAIN + [dataclasses.replace(x, overdraft=4) for x in PLAIN if x.requests_per_unit]
# The limits whose refunds across slots are exact.
REFUNDED_EXACTLY = [x for x in LIMITS if x.algorithm != "token_bucket"]
TAGS = "abc"  # hash tags: three slots, on one node or several

# One hit: (limit index, cost, role: plain, shadow or quota).
Pick = tuple[int, int, str]
R = TypeVar("R")


def hits_of(limits: Sequence[Limit]) -> st.SearchStrategy[Pick]:
    """One hit on one of `limits`."""
    roles = st.sampled_from(["plain", "shadow", "quota"])
    return st.tuples(st.sampled_from(range(len(limits))), st.integers(0, 12), roles)


def hit(key: str, limit: Limit, cost: int, role: str) -> Hit:
    """The hit a pick describes."""
    return Hit(key, limit, cost, role == "shadow", role == "quota")


def steps_of(request: st.SearchStrategy[R]) -> st.SearchStrategy[list[tuple[int, list[R]]]]:
    """Time steps in microseconds, each with the requests sent together after it (now and
    then across a calendar day)."""
    return st.lists(
        st.tuples(
            st.one_of(st.integers(0, 3 * S), st.integers(0, 90 * S), st.integers(0, 86_400 * S)),
            st.lists(request, min_size=1, max_size=3),
        ),
        min_size=1,
        max_size=30,
    )


request = st.lists(hits_of(LIMITS), min_size=1, max_size=4)
# Within one slot: every key of the request carries its tag.
tagged_request = st.tuples(st.sampled_from(TAGS), request)
# Across slots: each key carries its own tag.
spread_request = st.lists(
    st.tuples(hits_of(REFUNDED_EXACTLY), st.sampled_from(TAGS)), min_size=1, max_size=4
)


def examples(n: int) -> settings:
    """Hypothesis settings for `n` examples, each a whole sequence against real servers."""
    return settings(
        max_examples=n, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )


@examples(150)
@given(start=st.integers(0, 10**6 * S), sequence=steps_of(request))
def test_memory_and_redis_agree_exactly(
    start: int,
    sequence: Sequence[tuple[int, Sequence[Sequence[Pick]]]],
    redis_server: RedisServer,
    loop: asyncio.AbstractEventLoop,
) -> None:
    redis_server.client().flushall()

    def hits(picks: Sequence[Pick]) -> list[Hit]:
        return [hit(f"k{i}", LIMITS[i], cost, role) for i, cost, role in picks]

    def remote(clock: FakeClock) -> Store:
        return RedisStore(redis_server.url, timeout=5, clock=clock)

    _agree(start, sequence, hits, remote, loop, together=True)


@examples(40)
@given(start=st.integers(0, 10**6 * S), sequence=steps_of(tagged_request))
def test_memory_and_cluster_agree_exactly_within_slots(
    start: int,
    sequence: Sequence[tuple[int, Sequence[tuple[str, Sequence[Pick]]]]],
    redis_cluster: RedisClusterServers,
    loop: asyncio.AbstractEventLoop,
) -> None:
    redis_cluster.flushall()

    def hits(tagged: tuple[str, Sequence[Pick]]) -> list[Hit]:
        tag, picks = tagged
        return [hit(f"{{{tag}}}k{i}", LIMITS[i], cost, role) for i, cost, role in picks]

    def remote(clock: FakeClock) -> Store:
        return ClusterStore(redis_cluster.nodes, timeout=5, clock=clock)

    _agree(start, sequence, hits, remote, loop, together=True)


@examples(40)
@given(start=st.integers(0, 10**6 * S), sequence=steps_of(spread_request))
def test_memory_and_cluster_agree_exactly_across_slots(
    start: int,
    sequence: Sequence[tuple[int, Sequence[Sequence[tuple[Pick, str]]]]],
    redis_cluster: RedisClusterServers,
    loop: asyncio.AbstractEventLoop,
) -> None:
    redis_cluster.flushall()

    def hits(picks: Sequence[tuple[Pick, str]]) -> list[Hit]:
        return [
            hit(f"{{{tag}}}k{i}", REFUNDED_EXACTLY[i], cost, role) for (i, cost, role), tag in picks
        ]

    def remote(clock: FakeClock) -> Store:
        return ClusterStore(redis_cluster.nodes, timeout=5, clock=clock)

    _agree(start, sequence, hits, remote, loop, together=False)


def _agree(
    start: int,
    sequence: Sequence[tuple[int, Sequence[R]]],
    hits: Callable[[R], list[Hit]],
    remote_store: Callable[[FakeClock], Store],
    loop: asyncio.AbstractEventLoop,
    together: bool,
) -> None:
    """Send each step's requests to the memory store one after another and to the remote
    store (all at once when `together`), both reading one clock; assert identical outcomes."""
    clock = FakeClock()
    clock.advance(us=start)
    memory = MemoryStore(clock)
    remote = remote_store(clock)
    try:
        for step_us, requests in sequence:
            clock.advance(us=step_us)
            batch = [hits(r) for r in requests]
            expected = [loop.run_until_complete(memory.apply(h)) for h in batch]
            if together:
                got = loop.run_until_complete(_together(remote, batch))
            else:
                got = [loop.run_until_complete(remote.apply(h)) for h in batch]
            assert got == expected
    finally:
        loop.run_until_complete(remote.close())


async def _together(store: Store, batch: list[list[Hit]]) -> list[list[Outcome]]:
    return await asyncio.gather(*(store.apply(hits) for hits in batch))
