"""The Redis connection of the single-server and Sentinel stores (storage/resp) against real
redis-server processes: its timeout measures Redis, not the event loop. A loop stalled past
the timeout while Redis answers promptly still gets Redis's answer; a Redis that hangs is
still given up on; replies stay matched to their calls."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import uvloop

from ratelimitd.algorithms import Hit, Outcome
from ratelimitd.model.rules import Limit, Unit
from ratelimitd.storage.base import StoreError
from ratelimitd.storage.redis import RedisStore
from tests.conftest import RedisServer

T = TypeVar("T")
LIMIT = Limit("token_bucket", 100, Unit.MINUTE, 100)
TIMEOUT_S = 0.05
# Far longer than the timeout, far shorter than a test worth waiting for.
STALL_S = 0.3


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Iterator[Callable[[Coroutine[Any, Any, T]], T]]:
    """Run a coroutine on the standard loop, and on uvloop, which the asgi transport uses
    and which runs due timers before it reads the sockets."""
    loop = asyncio.new_event_loop() if request.param == "asyncio" else uvloop.new_event_loop()
    yield loop.run_until_complete
    loop.close()


def evalsha_calls(server: RedisServer) -> int:
    stats = server.client().info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_a_loop_stalled_past_the_timeout_still_gets_redis_answer(
    own_redis: RedisServer, run: Callable[[Coroutine[Any, Any, Any]], Any]
) -> None:
    store = RedisStore(own_redis.url, timeout=TIMEOUT_S)

    async def stalled_call() -> list[Outcome]:
        await store.apply([Hit("warm", LIMIT, 1)])  # connected
        before = evalsha_calls(own_redis)
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        call = asyncio.ensure_future(store.apply([Hit("k", LIMIT, 1)]))
        await asyncio.sleep(0.01)  # the call is sent and waits for its reply, its timer running
        os.kill(own_redis.process.pid, signal.SIGCONT)
        # Without giving the loop a turn: Redis answers (its reply waits, unread, in the
        # socket) and the loop stalls, as in a GC pause or without a CPU on a busy host, for
        # longer than the timeout.
        while evalsha_calls(own_redis) == before:
            time.sleep(0.001)  # noqa: ASYNC251
        time.sleep(STALL_S)  # noqa: ASYNC251
        return await call

    try:
        assert run(stalled_call()) == [Outcome(True, 99, 600_000)]  # Redis's, not a failure
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
        run(store.close())


def test_a_loop_stalled_before_the_call_is_sent_is_not_the_stores_fault(
    redis_url: str, run: Callable[[Coroutine[Any, Any, Any]], Any]
) -> None:
    store = RedisStore(redis_url, timeout=TIMEOUT_S)

    async def calls_around_a_stall() -> list[list[Outcome]]:
        await store.apply([Hit("warm", LIMIT, 1)])
        first = asyncio.ensure_future(store.apply([Hit("k", LIMIT, 1)]))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(store.apply([Hit("k", LIMIT, 1)]))
        time.sleep(STALL_S)  # noqa: ASYNC251 -- the second batch is not even sent yet
        return [await first, await second]

    try:
        first, second = run(calls_around_a_stall())
        assert (first[0].remaining, second[0].remaining) == (99, 98)
    finally:
        run(store.close())


def test_a_hung_redis_fails_the_call_then_is_reconnected(
    own_redis: RedisServer, run: Callable[[Coroutine[Any, Any, Any]], Any]
) -> None:
    store = RedisStore(own_redis.url, timeout=TIMEOUT_S)
    try:
        assert run(store.apply([Hit("k", LIMIT, 1)]))[0].admitted
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(StoreError, match="no reply within"):
            run(store.apply([Hit("k", LIMIT, 1)]))
        # Bounded, with room for a loaded machine: a hang would take until the test's end.
        assert time.monotonic() - started < TIMEOUT_S + 1.0
        os.kill(own_redis.process.pid, signal.SIGCONT)
        # The timed-out call never reached a counter it could have consumed twice... and the
        # next call gets a new connection and Redis's answer.
        assert run(store.apply([Hit("k", LIMIT, 1)]))[0].remaining in (97, 98)
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
        run(store.close())


def test_a_hung_redis_on_a_stalling_loop_still_fails(
    own_redis: RedisServer, run: Callable[[Coroutine[Any, Any, Any]], Any]
) -> None:
    store = RedisStore(own_redis.url, timeout=TIMEOUT_S)

    async def call_while_stalling() -> list[Outcome]:
        call = asyncio.ensure_future(store.apply([Hit("k", LIMIT, 1)]))
        while not call.done():  # a loop that keeps stalling: each stall is granted back...
            time.sleep(0.1)  # noqa: ASYNC251
            await asyncio.sleep(0.01)
        return await call  # ...up to a bound, then the call fails

    try:
        run(store.ping())  # connected
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(StoreError):
            run(call_while_stalling())
        assert time.monotonic() - started < TIMEOUT_S + 1.0 + 2.0
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
        run(store.close())


def test_error_replies_reach_their_call_and_the_connection_goes_on(
    redis_url: str, redis_server: RedisServer, run: Callable[[Coroutine[Any, Any, Any]], Any]
) -> None:
    store = RedisStore(redis_url, timeout=5)

    async def three_calls() -> tuple[Any, ...]:
        client = store._client
        return await asyncio.gather(
            client.execute("PING"),
            client.execute("NO-SUCH-COMMAND"),
            client.execute("ECHO", "x"),
            return_exceptions=True,
        )

    try:
        pong, error, echo = run(three_calls())
        assert (pong, echo) == (b"PONG", b"x")
        assert "unknown command" in str(error)
    finally:
        run(store.close())
