"""The Redis Cluster store against a real 3-master cluster: all-or-nothing within a slot,
refunds across slots, the same decisions as a single Redis, one pipeline per batch, script
cache loss on every node; and the store URLs of every scheme."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from redis.crc import key_slot

from ratelimitd.algorithms import ALGORITHMS, Hit, Outcome
from ratelimitd.model.rules import Unit
from ratelimitd.storage.base import Store, StoreError
from ratelimitd.storage.clock import FakeClock
from ratelimitd.storage.cluster import ClusterStore
from ratelimitd.storage.factory import Servers, build_store, parse_servers
from ratelimitd.storage.memory import MemoryStore
from ratelimitd.storage.redis import RedisStore, ScriptRunner, decode
from ratelimitd.storage.sentinel import SentinelStore
from tests.conftest import RatelimitdFactory, RedisClusterServers, RedisServer, free_port
from tests.stores import S, limit

NAMES = sorted(ALGORITHMS)
T = TypeVar("T")


class Run(Protocol):
    """The `run` fixture: a coroutine run to completion on the test's loop."""

    def __call__(self, coroutine: Coroutine[Any, Any, T], /) -> T: ...


@pytest.fixture
def cluster(redis_cluster: RedisClusterServers) -> RedisClusterServers:
    """The session's cluster, emptied for this test."""
    redis_cluster.flushall()
    return redis_cluster


@pytest.fixture
def clock() -> FakeClock:
    """Time for the scripts, at the start of a day: every window starts here."""
    clock = FakeClock()
    clock.advance(us=86_400 * S - clock.now_us % (86_400 * S))
    return clock


@pytest.fixture
def store(
    cluster: RedisClusterServers, clock: FakeClock, loop: asyncio.AbstractEventLoop
) -> Iterator[ClusterStore]:
    """A cluster store reading `clock`."""
    store = ClusterStore(cluster.nodes, timeout=5, clock=clock)
    yield store
    loop.run_until_complete(store.close())


def tags_on_two_nodes(cluster: RedisClusterServers) -> tuple[str, str]:
    """Two hash tags whose slots live on different nodes."""
    owners = [
        (int(first), int(last), int(primary[1]))
        for first, last, primary, *_ in cluster.servers[0].client().cluster("slots")
    ]
    first_by_port: dict[int, str] = {}
    for n in range(1000):
        tag = f"{{t{n}}}"
        slot = key_slot(tag.encode())
        port = next(port for first, last, port in owners if first <= slot <= last)
        first_by_port.setdefault(port, tag)
        if len(first_by_port) == 2:
            here, there = first_by_port.values()
            return here, there
    raise AssertionError("all hash tags map to one node")


@pytest.mark.parametrize("algorithm", NAMES)
def test_a_request_within_one_slot_is_all_or_nothing_in_one_call(
    store: ClusterStore, cluster: RedisClusterServers, run: Run, algorithm: str
) -> None:
    wide, narrow = limit(algorithm, 10), limit(algorithm, 1)
    run(store.apply([Hit("{t}narrow", narrow, 1)]))
    trips = store.round_trips
    outcomes = run(store.apply([Hit("{t}wide", wide, 1), Hit("{t}narrow", narrow, 1)]))
    assert [(o.admitted, o.remaining) for o in outcomes] == [(True, 10), (False, 0)]
    assert store.round_trips == trips + 1  # the script rolled back; nothing to refund
    assert not cluster.client.exists("{t}wide")
    assert run(store.apply([Hit("{t}wide", wide, 1)]))[0].remaining == 9


@pytest.mark.parametrize("algorithm", NAMES)
def test_a_rejection_in_one_slot_refunds_the_other_slot(
    store: ClusterStore, cluster: RedisClusterServers, run: Run, algorithm: str
) -> None:
    here, there = tags_on_two_nodes(cluster)
    wide, narrow = limit(algorithm, 10), limit(algorithm, 1)
    used, fresh, full = f"{here}used", f"{here}fresh", f"{there}full"
    run(store.apply([Hit(used, wide, 2), Hit(full, narrow, 1)]))
    stored_before = cluster.client.get(used)
    peek_before = run(store.apply([Hit(used, wide, 0)]))[0]
    trips = store.round_trips

    outcomes = run(store.apply([Hit(used, wide, 3), Hit(fresh, wide, 1), Hit(full, narrow, 1)]))

    assert store.round_trips == trips + 2  # the evaluation, then the refund
    # Reported as a single Redis reports a rejected request: each hit's own verdict, and
    # the counters as they were.
    assert outcomes[0] == Outcome(True, 8, peek_before.reset_us)
    assert (outcomes[1].admitted, outcomes[1].remaining) == (True, 10)
    assert (outcomes[2].admitted, outcomes[2].remaining) == (False, 0)
    # And really as they were.
    assert cluster.client.get(used) == stored_before
    assert not cluster.client.exists(fresh)
    assert run(store.apply([Hit(used, wide, 0)]))[0] == peek_before


def test_decisions_match_a_single_redis(
    store: ClusterStore, clock: FakeClock, redis_url: str, run: Run
) -> None:
    """A recorded sequence of requests, within one slot or across two or three, over all
    four algorithms, shadow hits and zero costs, gets the same answers from the cluster as
    from a single Redis reading the same clock. Requests are sent one at a time: within one
    batch a cross-slot rejection holds its capacity until its refund (docs/redis.md). A
    refunded token bucket is re-based at the evaluation time, which can round a later answer
    1 us differently (docs/redis.md); this recording does not run into that."""
    single = RedisStore(redis_url, timeout=5, clock=clock)
    limits = [
        limit(name, per_unit, unit, burst if ALGORITHMS[name].uses_burst else None)
        for name in NAMES
        for per_unit, unit, burst in [
            (5, Unit.MINUTE, None),
            (3, Unit.SECOND, 6),
            (0, Unit.HOUR, None),
        ]
    ]
    rng = random.Random(20_260_101)  # the recording: fixed, so every run replays it
    cross_slot_rejections = 0
    try:
        for _ in range(400):
            clock.advance(us=rng.choice([0, rng.randrange(3 * S), rng.randrange(90 * S)]))
            hits = [
                Hit(f"{{{rng.choice('abc')}}}k{i}", limits[i], rng.randrange(5), rng.random() < 0.2)
                for i in (rng.randrange(len(limits)) for _ in range(rng.randint(1, 4)))
            ]
            expected = run(single.apply(hits))
            got = run(store.apply(hits))
            assert got == expected, hits
            rejected = any(not o.admitted and not h.shadow for o, h in zip(got, hits, strict=True))
            cross_slot_rejections += rejected and len({h.key[1] for h in hits}) > 1
    finally:
        run(single.close())
    assert cross_slot_rejections > 30  # the refunds were exercised


@pytest.mark.parametrize("algorithm", NAMES)
@pytest.mark.parametrize(
    ("later_s", "other_hit"),
    [(3, False), (12, False), (12, True)],
    ids=["same-window", "next-window", "next-window-used-meanwhile"],
)
@pytest.mark.usefixtures("redis_url")  # an empty server
def test_a_later_refund_undoes_its_hit(
    redis_server: RedisServer,
    run: Run,
    algorithm: str,
    later_s: int,
    other_hit: bool,
) -> None:
    """A refund that lands after time moved on (in production: the refund's round trip) or
    after the window rolled over, possibly with another hit in between, leaves the counter as
    if the refunded hit had never been counted. The times keep the token bucket's numbers
    exact in binary, and away from a full bucket (see docs/redis.md on refunds)."""
    clock = FakeClock()
    clock.advance(us=60 * S - clock.now_us % (60 * S) + 54 * S)  # 6 s before a window ends
    memory = MemoryStore(clock)
    client = redis_server.client()
    scripts = ScriptRunner(clock)
    for script in (scripts.request, scripts.refund):
        client.script_load(script.source)

    def evaluate(hit: Hit) -> Outcome:
        return decode([[hit]], client.evalsha(*scripts.request_call([[hit]])))[0][0]

    def both(hit: Hit) -> Outcome:
        run(memory.apply([hit]))
        return evaluate(hit)

    ten = limit(algorithm, 10)
    both(Hit("k", ten, 2))
    refunded = Hit("k", ten, 3)
    reset_us = evaluate(refunded).reset_us  # the memory store never sees this hit
    clock.advance(later_s)
    if other_hit:
        both(Hit("k", ten, 1))
    client.evalsha(*scripts.refund_call([(refunded, reset_us)]))
    assert evaluate(Hit("k", ten, 0)) == run(memory.apply([Hit("k", ten, 0)]))[0]


def test_one_tick_is_one_pipeline_with_one_script_call_per_slot(
    store: ClusterStore, cluster: RedisClusterServers, run: Run
) -> None:
    here, there = tags_on_two_nodes(cluster)
    five = limit("token_bucket", 5)
    requests = [
        [Hit(f"{here}a", five, 1)],
        [Hit(f"{here}a", five, 1), Hit(f"{here}b", five, 1)],
        [Hit(f"{there}a", five, 1)],
        [Hit(f"{here}a", five, 1), Hit(f"{there}a", five, 1)],
    ]
    calls_before = _evalsha_calls(cluster)

    async def together() -> list[list[Outcome]]:
        return await asyncio.gather(*(store.apply(hits) for hits in requests))

    results = run(together())
    assert store.round_trips == 1
    calls = [
        after - before for after, before in zip(_evalsha_calls(cluster), calls_before, strict=True)
    ]
    assert sorted(calls) == [0, 1, 1]  # one call for each slot, on its node
    # In submission order, as if one after another.
    assert [[o.remaining for o in outcomes] for outcomes in results] == [[4], [3, 4], [4], [2, 3]]


def test_scripts_lost_on_every_node_are_loaded_again(
    store: ClusterStore, cluster: RedisClusterServers, run: Run
) -> None:
    here, there = tags_on_two_nodes(cluster)
    wide, narrow = limit("fixed_window", 10), limit("fixed_window", 1)
    run(store.apply([Hit(f"{here}wide", wide, 1), Hit(f"{there}narrow", narrow, 1)]))
    cluster.client.script_flush()
    scripts = ScriptRunner(None)
    shas = (scripts.request.sha, scripts.refund.sha)
    assert not any(any(server.client().script_exists(*shas)) for server in cluster.servers)

    # Rejected across slots: needs the request script, then the refund script.
    outcomes = run(store.apply([Hit(f"{here}wide", wide, 1), Hit(f"{there}narrow", narrow, 1)]))

    assert [(o.admitted, o.remaining) for o in outcomes] == [(True, 9), (False, 0)]
    assert run(store.apply([Hit(f"{here}wide", wide, 0)]))[0].remaining == 9
    assert all(all(server.client().script_exists(*shas)) for server in cluster.servers)


def test_ping_asks_every_primary(store: ClusterStore, run: Run) -> None:
    assert run(store.ping())


def test_unreachable_cluster_raises_store_error(run: Run) -> None:
    store = ClusterStore([("127.0.0.1", free_port())], timeout=0.2)
    with pytest.raises(StoreError, match="redis cluster"):
        run(store.apply([Hit("k", limit("token_bucket", 5), 1)]))
    assert not run(store.ping())
    run(store.close())


def test_serve_uses_the_cluster_its_url_names(
    cluster: RedisClusterServers, ratelimitd: RatelimitdFactory, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("domain: d\ndescriptors: []\n")
    # /healthcheck answers 200 only once the store answers a ping.
    server = ratelimitd(config, redis_url=cluster.url)
    assert server.http("/healthcheck")[0] == 200


# -- URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "servers"),
    [
        (
            "redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/mymaster",
            Servers(
                "redis+sentinel", (("10.0.0.1", 26379), ("10.0.0.2", 26380)), None, None, "mymaster"
            ),
        ),
        (
            "redis+sentinel://:s%40cret@sentinel/mymaster/2",
            Servers("redis+sentinel", (("sentinel", 26379),), None, "s@cret", "mymaster", 2),
        ),
        (
            "REDIS+SENTINEL://limiter:pw@[::1]:5000/mymaster/",
            Servers("redis+sentinel", (("::1", 5000),), "limiter", "pw", "mymaster"),
        ),
        ("redis+sentinel://pw@s:1/m", Servers("redis+sentinel", (("s", 1),), None, "pw", "m")),
        (
            "redis+cluster://node-a:7000,node-b:7001,node-c",
            Servers("redis+cluster", (("node-a", 7000), ("node-b", 7001), ("node-c", 6379))),
        ),
        (
            "redis+cluster://limiter:p%3Aw@n:7000/",
            Servers("redis+cluster", (("n", 7000),), "limiter", "p:w"),
        ),
    ],
)
def test_sentinel_and_cluster_urls(url: str, servers: Servers) -> None:
    assert parse_servers(url) == servers


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        (None, MemoryStore),
        ("redis://:pw@127.0.0.1:6379/1", RedisStore),
        ("rediss://127.0.0.1:6380/0", RedisStore),
        ("redis+sentinel://127.0.0.1:26379/mymaster/1", SentinelStore),
        ("redis+cluster://127.0.0.1:7000,127.0.0.1:7001", ClusterStore),
    ],
)
def test_each_scheme_builds_its_store(url: str | None, kind: type[Store], run: Run) -> None:
    store = build_store(url, timeout=0.05)  # nothing connects before the first call
    assert isinstance(store, kind)
    run(store.close())


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://:hunter2@h:1", "unsupported Redis URL scheme 'http://'"),
        ("h:1", "the Redis URL has no scheme"),
        (":hunter2@h:1", "the Redis URL has no scheme"),
        ("redis://:hunter2@h:port/0", "redis URL: Port could not be cast to integer"),
        ("redis://:hunter2@h:1/one", "redis URL: database 'one' is not a number"),
        ("redis+sentinel://:hunter2@h:1", "redis+sentinel URL names no master"),
        ("redis+sentinel://:hunter2@h:1/m/x", "redis+sentinel URL: database 'x' is not a number"),
        ("redis+sentinel://:hunter2@h:1/m/0/x", "unexpected path '/m/0/x'"),
        ("redis+sentinel://:hunter2@h:x/m", "redis+sentinel URL: 'h:x' is not host:port"),
        ("redis+cluster://:hunter2@", "redis+cluster URL: empty host"),
        ("redis+cluster://:hunter2@a:1,,b:2", "redis+cluster URL: empty host"),
        ("redis+cluster://:hunter2@h:99999", "port 99999 of 'h:99999' is out of range"),
        ("redis+cluster://:hunter2@h:1/0", "unexpected path '/0' (a cluster has only database 0)"),
        ("redis+cluster://:hunter2@h:1?timeout=1", "query strings and fragments"),
    ],
)
def test_bad_urls_name_the_problem_never_the_password(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)) as caught:
        build_store(url, timeout=0.05)
    assert "hunter2" not in str(caught.value)


def test_parsed_urls_keep_the_password_out_of_their_repr() -> None:
    assert "hunter2" not in repr(parse_servers("redis+cluster://:hunter2@h:1"))


def _evalsha_calls(cluster: RedisClusterServers) -> list[int]:
    return [_calls(server) for server in cluster.servers]


def _calls(server: RedisServer) -> int:
    stats = server.client().info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))
