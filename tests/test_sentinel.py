"""The Sentinel store against real processes: a master, one replica and one sentinel. It
decides on the master, and again on the new master after a failover, with the counters the
replica received."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import pytest

from ratelimitd.algorithms import Hit, Outcome
from ratelimitd.model.rules import Limit, Unit
from ratelimitd.storage.base import Store, StoreError
from ratelimitd.storage.clock import FakeClock
from ratelimitd.storage.factory import build_store
from tests.conftest import STARTUP_TIMEOUT_S, RedisServer, start_redis, wait_until

SERVICE = "ratelimit"
FIVE = Limit("fixed_window", 5, Unit.HOUR, 5)


@dataclass
class SentinelSetup:
    """Two data servers (master first, until a failover) and the sentinel watching them."""

    servers: list[RedisServer]
    sentinel: RedisServer

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{SERVICE}"

    def master_port(self) -> int:
        """The port of the master the sentinel names."""
        address = self.sentinel.client().sentinel_get_master_addr_by_name(SERVICE)
        return int(cast(tuple[bytes, int], address)[1])

    def server(self, port: int) -> RedisServer:
        return next(server for server in self.servers if server.port == port)


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    """A master, its replica, and a sentinel that knows both."""
    tmp = tmp_path_factory.mktemp("sentinel")
    started: list[RedisServer] = []
    try:
        # Syncing the replica would otherwise wait 5 s for more replicas to join.
        master = start_redis(tmp, options={"repl-diskless-sync-delay": "0"})
        started.append(master)
        replica = start_redis(tmp)
        started.append(replica)
        replica.client().replicaof("127.0.0.1", master.port)

        def linked() -> bool:
            return replica.client().info("replication").get("master_link_status") == "up"

        # Linked before the sentinel starts, so its first look at the master lists the
        # replica (the next look is 10 s later).
        wait_until(linked, STARTUP_TIMEOUT_S, "the replica to sync")
        config = tmp / "sentinel.conf"  # the sentinel rewrites it, so it must be its own
        config.write_text(
            f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
        )
        watcher = start_redis(tmp, sentinel_config=config)
        started.append(watcher)

        def replica_known() -> bool:
            replicas = watcher.client().sentinel_slaves(SERVICE)
            return any(r["flags"] == "slave" for r in replicas)

        wait_until(replica_known, STARTUP_TIMEOUT_S, "the sentinel to see the replica")
        yield SentinelSetup([master, replica], watcher)
    finally:
        for server in started:
            server.process.terminate()
            server.process.wait(timeout=10)


def test_decisions_follow_a_failover(
    sentinel: SentinelSetup, loop: asyncio.AbstractEventLoop
) -> None:
    store = build_store(sentinel.url, timeout=5, clock=FakeClock())
    old = sentinel.server(sentinel.master_port())
    new = next(server for server in sentinel.servers if server is not old)
    try:
        outcomes = [loop.run_until_complete(store.apply([Hit("k", FIVE, 1)])) for _ in range(3)]
        assert [o[0].remaining for o in outcomes] == [4, 3, 2]
        assert old.client().wait(1, 5000) == 1  # the replica has the counter

        sentinel.sentinel.client().sentinel_failover(SERVICE)

        def switched() -> bool:
            role = new.client().role()[0]
            return sentinel.master_port() == new.port and role in ("master", b"master")

        wait_until(switched, STARTUP_TIMEOUT_S, "the sentinel to promote the replica")
        # The sentinel turns the old master into a replica on its next check, up to 10 s
        # later; do it now. Until then the store would go on writing to the old master.
        old.client().replicaof("127.0.0.1", new.port)

        outcome = _first_answer(store, loop, [Hit("k", FIVE, 1)])
        assert (outcome.admitted, outcome.remaining) == (True, 1)  # counted on, not anew
        assert new.client().get("k") is not None
    finally:
        loop.run_until_complete(store.close())


def _first_answer(store: Store, loop: asyncio.AbstractEventLoop, hits: list[Hit]) -> Outcome:
    """The store's answer once it has one: calls on connections to the demoted master fail
    (READONLY), and the failure makes the next call ask the sentinel again."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        try:
            return loop.run_until_complete(store.apply(hits))[0]
        except StoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
