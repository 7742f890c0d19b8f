"""The Redis store against real redis-server processes: script cache loss, passwords, and the
keys the engine writes."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ratelimitd.algorithms import Hit, Outcome
from ratelimitd.model.rules import Limit, Unit
from ratelimitd.storage.base import StoreError
from ratelimitd.storage.redis import RedisStore, script_source
from tests.conftest import RedisServer, free_port, start_redis

LIMIT = Limit("token_bucket", 5, Unit.MINUTE, 5)


def test_script_is_reloaded_after_redis_loses_it(
    redis_server: RedisServer, redis_url: str, loop: asyncio.AbstractEventLoop
) -> None:
    store = RedisStore(redis_url, timeout=5)
    try:
        assert loop.run_until_complete(store.apply([Hit("k", LIMIT, 1)]))[0].remaining == 4
        redis_server.client().script_flush()
        assert loop.run_until_complete(store.apply([Hit("k", LIMIT, 1)]))[0].remaining == 3
    finally:
        loop.run_until_complete(store.close())


@pytest.fixture(scope="module")
def password_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis-auth"))
    client = server.client()
    client.acl_setuser(
        "limiter", enabled=True, passwords=["+s3cret"], commands=["+@all"], keys=["*"]
    )
    client.config_set("requirepass", "topsecret")
    yield server
    server.process.terminate()
    server.process.wait(timeout=10)


@pytest.mark.parametrize(
    ("credentials", "works"),
    [(":topsecret@", True), ("limiter:s3cret@", True), ("", False), (":wrong@", False)],
)
def test_password_and_acl_user_from_the_url(
    password_redis: RedisServer, loop: asyncio.AbstractEventLoop, credentials: str, works: bool
) -> None:
    store = RedisStore(f"redis://{credentials}127.0.0.1:{password_redis.port}/0", timeout=5)
    try:
        if works:
            outcome = loop.run_until_complete(store.apply([Hit(f"k-{credentials}", LIMIT, 1)]))
            assert outcome[0].admitted
            assert loop.run_until_complete(store.ping())
        else:
            with pytest.raises(StoreError):
                loop.run_until_complete(store.apply([Hit("k", LIMIT, 1)]))
            assert not loop.run_until_complete(store.ping())
    finally:
        loop.run_until_complete(store.close())


def test_unreachable_redis_raises_store_error(loop: asyncio.AbstractEventLoop) -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    with pytest.raises(StoreError, match="redis"):
        loop.run_until_complete(store.apply([Hit("k", LIMIT, 1)]))
    loop.run_until_complete(store.close())


def test_script_source_is_the_files_in_lua() -> None:
    lua = Path(__file__).resolve().parent.parent / "lua"
    source = script_source()
    for name in ("token_bucket.lua", "request.lua"):
        assert (lua / name).read_text() in source


def test_redis_cli_sees_the_documented_key(redis_server: RedisServer, redis_url: str) -> None:
    loop = asyncio.new_event_loop()
    store = RedisStore(redis_url, timeout=5)
    try:
        loop.run_until_complete(store.apply([Hit("rl:{d:tenant=acme}:tb:5/60:5", LIMIT, 2)]))
    finally:
        loop.run_until_complete(store.close())
        loop.close()
    value = subprocess.run(
        ["redis-cli", "-p", str(redis_server.port), "GET", "rl:{d:tenant=acme}:tb:5/60:5"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert float(value[0]) == 3.0  # tokens left, then the refill timestamp in microseconds
    assert int(value[1]) > 1_700_000_000_000_000


def test_concurrent_calls_are_pipelined_on_one_connection(
    redis_server: RedisServer, redis_url: str, loop: asyncio.AbstractEventLoop
) -> None:
    store = RedisStore(redis_url, timeout=5, batch=False)
    limit = Limit("token_bucket", 100, Unit.MINUTE, 100)

    async def many() -> list[int]:
        results = await asyncio.gather(*(store.apply([Hit("k", limit, 1)]) for _ in range(20)))
        return [r[0].remaining for r in results]

    def connections() -> int:
        return int(redis_server.client().info("clients")["connected_clients"])

    before = connections()
    try:
        # Replies are matched to calls in order: each call sees the ones sent before it.
        assert loop.run_until_complete(many()) == list(range(99, 79, -1))
        assert store.round_trips == 20
        assert connections() == before + 1
    finally:
        loop.run_until_complete(store.close())


def test_requests_of_one_tick_share_one_round_trip(
    redis_server: RedisServer, redis_url: str, loop: asyncio.AbstractEventLoop
) -> None:
    store = RedisStore(redis_url, timeout=5)
    one = Limit("fixed_window", 3, Unit.HOUR, 3)

    async def burst() -> list[list[Outcome]]:
        return await asyncio.gather(*(store.apply([Hit("k", one, 1)]) for _ in range(5)))

    try:
        calls_before = _evalsha_calls(redis_server)
        results = loop.run_until_complete(burst())
        assert _evalsha_calls(redis_server) - calls_before == 1
        assert store.round_trips == 1
        # In submission order, as if one after another.
        assert [r[0].admitted for r in results] == [True, True, True, False, False]
        assert [r[0].remaining for r in results] == [2, 1, 0, 0, 0]
    finally:
        loop.run_until_complete(store.close())


def test_a_failing_batch_fails_every_request_in_it(loop: asyncio.AbstractEventLoop) -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)

    async def burst() -> list[BaseException | list[Outcome]]:
        calls = (store.apply([Hit("k", LIMIT, 1)]) for _ in range(3))
        return await asyncio.gather(*calls, return_exceptions=True)

    results = loop.run_until_complete(burst())
    assert all(isinstance(r, StoreError) for r in results)
    loop.run_until_complete(store.close())


def _evalsha_calls(server: RedisServer) -> int:
    stats = server.client().info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_a_cancelled_request_leaves_the_rest_of_its_batch_alone(
    redis_url: str, loop: asyncio.AbstractEventLoop
) -> None:
    store = RedisStore(redis_url, timeout=5)

    async def three_one_cancelled() -> list[BaseException | list[Outcome]]:
        calls = [asyncio.ensure_future(store.apply([Hit("k", LIMIT, 1)])) for _ in range(3)]
        await asyncio.sleep(0)  # all three wait on their batch
        calls[1].cancel()  # its client went away
        return await asyncio.gather(*calls, return_exceptions=True)

    try:
        first, cancelled, third = loop.run_until_complete(three_one_cancelled())
        assert isinstance(cancelled, asyncio.CancelledError)
        assert isinstance(first, list)
        assert isinstance(third, list)
        # Sent before the cancellation, the middle one was counted all the same.
        assert (first[0].remaining, third[0].remaining) == (4, 2)
    finally:
        loop.run_until_complete(store.close())
