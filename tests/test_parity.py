"""Property: the memory store and the Redis scripts are the same functions. For random
sequences of time steps, costs and descriptor sets, both give identical decisions, remaining
values and reset times, for every algorithm and for requests mixing them. The requests of a
step reach Redis concurrently, so batching is exercised too: a batch decides as the same
requests one after another would."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ratelimitd.algorithms import ALGORITHMS, Hit, Outcome
from ratelimitd.model.rules import Unit
from ratelimitd.storage.clock import FakeClock
from ratelimitd.storage.memory import MemoryStore
from ratelimitd.storage.redis import RedisStore
from tests.conftest import RedisServer
from tests.stores import S, limit

SHAPES = [
    (10, Unit.MINUTE, None),
    (3, Unit.SECOND, 7),
    (7, Unit.HOUR, 2),
    (1000, Unit.DAY, None),
    (0, Unit.MINUTE, None),
    (1, Unit.SECOND, None),
]
PLAIN = [
    limit(name, per_unit, unit, burst if ALGORITHMS[name].uses_burst else None)
    for name in sorted(ALGORITHMS)
    for per_unit, unit, burst in SHAPES
]
# The same with overdraft: charges past the limit kept, as debt of at most 4.
LIMITS = PLAIN + [dataclasses.replace(x, overdraft=4) for x in PLAIN if x.requests_per_unit]

request = st.lists(  # one request: (limit, cost, shadow) per hit
    st.tuples(st.sampled_from(range(len(LIMITS))), st.integers(0, 12), st.booleans()),
    min_size=1,
    max_size=4,
)
steps = st.lists(
    st.tuples(
        st.one_of(st.integers(0, 3 * S), st.integers(0, 90 * S)),  # time step, microseconds
        st.lists(request, min_size=1, max_size=3),  # sent together
    ),
    min_size=1,
    max_size=30,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(start=st.integers(0, 10**6 * S), sequence=steps)
def test_memory_and_redis_agree_exactly(
    start: int,
    sequence: Sequence[tuple[int, Sequence[Sequence[tuple[int, int, bool]]]]],
    redis_server: RedisServer,
    loop: asyncio.AbstractEventLoop,
) -> None:
    redis_server.client().flushall()
    memory_clock, redis_clock = FakeClock(), FakeClock()
    memory = MemoryStore(memory_clock)
    remote = RedisStore(redis_server.url, timeout=5, clock=redis_clock)
    try:
        for clock in (memory_clock, redis_clock):
            clock.advance(us=start)
        for step_us, requests in sequence:
            for clock in (memory_clock, redis_clock):
                clock.advance(us=step_us)
            batch = [
                [Hit(f"k{i}", LIMITS[i], cost, shadow) for i, cost, shadow in picks]
                for picks in requests
            ]
            expected = [loop.run_until_complete(memory.apply(hits)) for hits in batch]
            assert loop.run_until_complete(_together(remote, batch)) == expected
    finally:
        loop.run_until_complete(remote.close())


async def _together(store: RedisStore, batch: list[list[Hit]]) -> list[list[Outcome]]:
    return await asyncio.gather(*(store.apply(hits) for hits in batch))
