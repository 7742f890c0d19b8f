"""A store and the fake clock it reads, driven synchronously, for behaviour tests that run
unchanged against every store."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import redis
import redis.cluster

from ratelimitd.algorithms import Hit, Outcome
from ratelimitd.model.rules import Limit, Unit
from ratelimitd.storage.clock import FakeClock
from ratelimitd.storage.memory import MemoryStore
from ratelimitd.storage.redis import RedisStore

S = 1_000_000  # microseconds per second


def limit(
    algorithm: str,
    per_unit: int,
    unit: Unit = Unit.MINUTE,
    burst: int | None = None,
    unit_multiplier: int = 1,
) -> Limit:
    """A Limit whose burst defaults to per_unit, as the loader builds it."""
    burst = per_unit if burst is None else burst
    return Limit(algorithm, per_unit, unit, burst, unit_multiplier=unit_multiplier)


class Driver:
    """A store plus the clock it reads, with synchronous calls for readable tests."""

    def __init__(
        self,
        store: MemoryStore | RedisStore,
        clock: FakeClock,
        run: Callable[[Coroutine[Any, Any, list[Outcome]]], list[Outcome]],
        redis_client: redis.Redis | None,
    ) -> None:
        self.store = store
        self.clock = clock
        self._run = run
        self.redis = redis_client

    def apply(self, *hits: Hit) -> list[Outcome]:
        return self._run(self.store.apply(hits))

    def apply_same(self, hits: Sequence[Hit]) -> list[Outcome]:
        """Apply this very sequence of hits, as the engine passes a plan's hits every time."""
        return self._run(self.store.apply(hits))

    def hit(self, key: str, limit: Limit, cost: int = 1) -> Outcome:
        return self.apply(Hit(key, limit, cost))[0]

    def snapshot(self) -> dict[Any, Any]:
        """Everything the store holds: the memory store's entries and expiry queue, or every
        Redis key's value and (real-time, so compared with a tolerance by `same`) TTL."""
        if self.redis is None:
            assert isinstance(self.store, MemoryStore)
            return {"states": dict(self.store._states), "expiry": sorted(self.store._expiry)}
        cluster = self._cluster()
        client: Any = cluster if cluster is not None else self.redis
        return {key: (client.get(key), self.redis.pttl(key)) for key in self.redis.keys("*")}

    def writes(self) -> int:
        """Writes Redis counted since its last save (never: tests run without saving)."""
        assert self.redis is not None
        cluster = self._cluster()
        if cluster is not None:
            info = cluster.info("persistence", target_nodes=redis.cluster.RedisCluster.PRIMARIES)
            return sum(int(node["rdb_changes_since_last_save"]) for node in info.values())
        return int(self.redis.info("persistence")["rdb_changes_since_last_save"])

    def _cluster(self) -> redis.cluster.RedisCluster | None:
        """The cluster client behind conftest.ClusterKeys, None for one server or memory."""
        cluster = getattr(self.redis, "cluster", None)
        return cluster if isinstance(cluster, redis.cluster.RedisCluster) else None

    def stored_keys(self) -> int:
        if self.redis is not None:
            return int(self.redis.dbsize())
        assert isinstance(self.store, MemoryStore)
        return len(self.store)

    def to_window_start(self, unit: Unit, offset_s: float = 0.0) -> None:
        """Advance the clock to the next start of a `unit` window (plus `offset_s`)."""
        unit_us = unit.seconds * S
        self.clock.advance(us=unit_us - self.clock.now_us % unit_us)
        self.clock.advance(offset_s)


def assert_same(before: dict[Any, Any], after: dict[Any, Any]) -> None:
    """Two snapshots hold the same state (Redis TTLs only lower by the real time between)."""
    assert before.keys() == after.keys()
    for key, old in before.items():
        new = after[key]
        if isinstance(key, str):  # the memory store's
            assert new == old
            continue
        (value, ttl), (new_value, new_ttl) = old, new
        assert new_value == value
        assert ttl - 5_000 <= new_ttl <= ttl
