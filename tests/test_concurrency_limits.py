"""Concurrency limits (`rate_limit: {concurrency: N}`): the config, the slots on the memory
store and on Redis step by step on a fake clock, and through the ASGI middleware: slots held
while a request runs, exact under racing clients, and back after their lease when the worker
holding them is killed."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import flask
import httpx
import pytest

from ratelimitd.algorithms import Hit, Outcome
from ratelimitd.algorithms.concurrency import Claim, Taken
from ratelimitd.config.descriptors import CONCURRENCY_WARNING
from ratelimitd.config.errors import InvalidConfigError
from ratelimitd.config.loader import load_config
from ratelimitd.core.engine import Engine
from ratelimitd.middleware import Limiter, RateLimitMiddleware, WSGIRateLimitMiddleware
from ratelimitd.middleware.asgi import Receive, Scope, Send
from ratelimitd.model.messages import Code, Descriptor, Request
from ratelimitd.storage.clock import FakeClock
from ratelimitd.storage.memory import MemoryStore
from ratelimitd.storage.redis import RedisStore
from ratelimitd.tools.explain import Verdict, explain
from tests.conftest import REPO, RedisServer, clean_environment, free_port, wait_until

Run = Callable[[Coroutine[Any, Any, Any]], Any]
S = 1_000_000

CONFIG = """
domain: app
extract:
  - entries:
      - {key: tenant, header: x-tenant-id}
descriptors:
  - key: tenant
    rate_limit: {concurrency: 2, name: in_flight}
  - key: tenant
    value: racing
    rate_limit: {concurrency: 5, name: racing}
  - key: tenant
    value: rated
    rate_limit: {concurrency: 1}
    descriptors:
      - key: rate
        rate_limit: {unit: minute, requests_per_unit: 1}
"""


# -- the config ---------------------------------------------------------------------------------


def test_a_concurrency_limit_loads_with_a_warning_and_no_door_through_envoy_enforces_it(
    write_config: Callable[[str], Path], run: Run
) -> None:
    path = write_config(CONFIG)
    config = load_config([path])
    assert config.warnings == tuple(f"{path}:{n}: {CONCURRENCY_WARNING}" for n in (8, 11, 14))
    engine = Engine(config, MemoryStore())
    request = Request("app", (Descriptor((("tenant", "t"),)),))
    for _ in range(3):  # never held, never released: no limit through ShouldRateLimit
        decision = run(engine.should_rate_limit(request))
        assert decision.code is Code.OK
        assert decision.response_headers == ()
    assert [claim for _, _, claim in engine.plan(request).slots] == [
        Claim("rl:{app:tenant=t}:concurrency:2", 2)
    ]
    (explained,) = run(explain(engine, request)).descriptors
    assert explained.verdict is Verdict.CONCURRENCY
    assert "only the in-app middleware enforces" in explained.why


@pytest.mark.parametrize(
    ("rate_limit", "message"),
    [
        ("{concurrency: 2, unit: minute}", "'unit' does not go with 'concurrency' (a rate)"),
        ("{concurrency: 0}", "concurrency"),
        ("{concurrency: 2, requests_per_unit: 3}", "'requests_per_unit' does not go with"),
    ],
)
def test_a_concurrency_limit_with_a_rate_is_an_error_at_its_line(
    write_config: Callable[[str], Path], rate_limit: str, message: str
) -> None:
    path = write_config(f"domain: d\ndescriptors:\n  - key: k\n    rate_limit: {rate_limit}\n")
    with pytest.raises(InvalidConfigError) as raised:
        load_config([path])
    assert str(raised.value).startswith(f"{path}:4")
    assert message in str(raised.value)


def test_a_shadow_concurrency_limit_is_an_error(write_config: Callable[[str], Path]) -> None:
    path = write_config(
        "domain: d\ndescriptors:\n  - key: k\n    shadow_mode: true\n"
        "    rate_limit: {concurrency: 1}\n"
    )
    with pytest.raises(InvalidConfigError, match=rf"{path}:5: .*takes no 'shadow_mode'"):
        load_config([path])


# -- the stores, step by step -------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def slots(
    request: pytest.FixtureRequest, run: Run
) -> Iterator[tuple[MemoryStore | RedisStore, FakeClock]]:
    """A store keeping slots, on a fake clock (Redis through the scripts' test time)."""
    clock = FakeClock()
    if request.param == "memory":
        yield MemoryStore(clock), clock
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    server.client().flushall()
    store = RedisStore(server.url, timeout=5, clock=clock)
    yield store, clock
    run(store.close())


def test_slots_are_taken_all_or_nothing_released_and_lost_with_their_lease(
    slots: tuple[MemoryStore | RedisStore, FakeClock], run: Run
) -> None:
    store, clock = slots
    a, b = Claim("a", 2), Claim("b", 1)
    lease = 10 * S
    assert run(store.take_slots([a], "r1", lease)) == Taken(True, (1,))
    assert run(store.take_slots([a, b], "r2", lease)) == Taken(True, (2, 1))
    # a is full: r3 takes nothing, not even b's free... b is full as well.
    assert run(store.take_slots([a, b], "r3", lease)) == Taken(False, (2, 1))
    run(store.release_slots(["b"], "r2"))
    assert run(store.take_slots([a, b], "r3", lease)) == Taken(False, (2, 0))
    assert run(store.take_slots([b], "r3", lease)) == Taken(True, (1,))  # r3 got nothing of a
    run(store.release_slots(["a"], "r1"))
    assert run(store.take_slots([a], "r4", lease)) == Taken(True, (2,))
    # r2 renews, r4 does not: after the lease only r2's slot of a is left.
    clock.advance(6)
    assert run(store.renew_slots(["a"], "r2", lease)) == 1
    clock.advance(6)
    assert run(store.renew_slots(["a"], "r4", lease)) == 0  # lapsed: not taken back
    assert run(store.take_slots([a], "r5", lease)) == Taken(True, (2,))
    assert run(store.take_slots([a], "r6", lease)) == Taken(False, (2,))


# -- through the middleware ----------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("redis_url")
    return url


class Gate:
    """An ASGI app whose requests wait until opened, counting those in flight."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.in_flight = 0
        self.most = 0
        self.entered = asyncio.Condition()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self.entered:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            self.entered.notify_all()
        try:
            await self.opened.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"done"})
        finally:
            self.in_flight -= 1

    async def wait_for(self, count: int) -> None:
        async with self.entered:
            await self.entered.wait_for(lambda: self.in_flight >= count)


def test_a_slot_is_held_while_the_request_runs_and_given_back_when_it_ends(
    write_config: Callable[[str], Path], store_url: str | None, run: Run
) -> None:
    limiter = Limiter.from_config(write_config(CONFIG), "app", store_url)
    gate = Gate()
    app = RateLimitMiddleware(gate, limiter)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            tenant = {"x-tenant-id": "t1"}
            held = [asyncio.ensure_future(http.get("/", headers=tenant)) for _ in range(2)]
            await gate.wait_for(2)
            rejected = await http.get("/", headers=tenant)
            assert rejected.status_code == 429
            assert rejected.headers["retry-after"] == "1"
            assert rejected.headers["content-type"] == "application/problem+json"
            body = json.loads(rejected.content)
            assert body["limits"] == [{"name": "in_flight", "concurrency": 2}]
            other = asyncio.ensure_future(http.get("/", headers={"x-tenant-id": "t2"}))
            await gate.wait_for(3)  # another tenant, other slots
            gate.opened.set()
            assert [r.status_code for r in await asyncio.gather(*held, other)] == [200] * 3
            gate.opened.clear()
            again = [asyncio.ensure_future(http.get("/", headers=tenant)) for _ in range(2)]
            await gate.wait_for(2)  # both slots came back
            gate.opened.set()
            assert [r.status_code for r in await asyncio.gather(*again)] == [200, 200]

    run(scenario())
    run(limiter.close())


def test_a_request_a_rate_limit_rejects_gives_its_slot_back(
    write_config: Callable[[str], Path], store_url: str | None, run: Run
) -> None:
    limiter = Limiter.from_config(write_config(CONFIG), "app", store_url)
    gate = Gate()
    gate.opened.set()
    app = RateLimitMiddleware(
        gate,
        limiter,
        descriptors=lambda scope: [{"tenant": "rated"}, {"tenant": "rated", "rate": "x"}],
    )

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            return [await http.get("/") for _ in range(3)]

    replies = run(scenario())
    assert [r.status_code for r in replies] == [200, 429, 429]
    # Over the rate, not over the concurrency limit of 1: the second gave its slot back.
    assert json.loads(replies[2].content)["fired_limit"] == "app.tenant_rated.rate"
    run(limiter.close())


def test_racing_clients_never_see_more_in_flight_than_the_limit(
    write_config: Callable[[str], Path], redis_url: str, run: Run
) -> None:
    """40 clients through 4 limiters (as 4 workers: each its own Redis connection) against
    `concurrency: 5`, each request holding its slot a few loop turns: at most 5 at once, and 5
    reached."""
    path = write_config(CONFIG)
    limiters = [Limiter.from_config(path, "app", redis_url) for _ in range(4)]
    in_flight = most = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            for _ in range(20):  # hold the slot while other clients go on
                await asyncio.sleep(0)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        finally:
            in_flight -= 1

    apps = [RateLimitMiddleware(app, limiter) for limiter in limiters]
    admitted = 0

    async def client(n: int) -> None:
        nonlocal admitted
        transport = httpx.ASGITransport(app=apps[n % len(apps)])
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            for _ in range(10):
                reply = await http.get("/", headers={"x-tenant-id": "racing"})
                assert reply.status_code in (200, 429)
                admitted += reply.status_code == 200

    async def race() -> None:
        await asyncio.gather(*(client(n) for n in range(40)))

    run(race())
    assert most == 5
    assert admitted >= 5
    for limiter in limiters:
        run(limiter.close())


def test_a_killed_workers_slot_comes_back_after_its_lease(
    write_config: Callable[[str], Path], redis_server: RedisServer, redis_url: str, run: Run
) -> None:
    path = write_config(CONFIG.replace("concurrency: 2,", "concurrency: 1,"))
    lease_s = 3.0  # renewed every second: a starved holder still renews in time
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.slot_holder", str(path), redis_url, str(lease_s)],
        cwd=REPO,
        env=clean_environment(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        key = "rl:{app:tenant=t1}:concurrency:1"
        redis = redis_server.client()
        (member,) = cast(list[bytes], redis.zrange(key, 0, -1))
        first_expiry = redis.zscore(key, member)
        assert first_expiry is not None

        def redis_now_us() -> int:
            seconds, micros = redis.time()
            return int(seconds) * S + int(micros)

        # Renewed while the worker lives: still held after the lease it was taken with.
        wait_until(lambda: redis_now_us() > first_expiry, 10, "the first lease to pass")
        limiter = Limiter.from_config(path, "app", redis_url, lease_s=lease_s)
        request = limiter.request([{"tenant": "t1"}])
        assert run(limiter.admit(request)).status == 429
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        # Nothing releases it now: only its lease ending frees the slot.
        wait_until(lambda: run(limiter.admit(request)).admitted, 10, "the slot to come back")
        run(limiter.close())
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_a_failing_request_gives_its_slot_back(
    write_config: Callable[[str], Path], store_url: str | None, run: Run
) -> None:
    limiter = Limiter.from_config(write_config(CONFIG), "app", store_url)

    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("the app failed")

    app = RateLimitMiddleware(broken, limiter)
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"x-tenant-id", b"t")]}

    async def fail() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request"}

        async def send(message: Any) -> None:
            raise AssertionError(message)

        with pytest.raises(RuntimeError, match="the app failed"):
            await app(scope, receive, send)

    for _ in range(3):  # with a slot kept per failure, the third would find both taken
        run(fail())
    run(limiter.close())


SLOTS_FAILING = """
domain: app
descriptors:
  - key: open
    rate_limit: {concurrency: 1}
  - key: closed
    rate_limit: {concurrency: 1, failure_mode: deny, name: closed}
  - key: envoy
    rate_limit: {concurrency: 1, failure_mode: unavailable}
"""


def test_slots_on_a_failing_store_follow_each_rules_failure_mode(
    write_config: Callable[[str], Path], run: Run
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    limiter = Limiter.from_config(write_config(SLOTS_FAILING), "app", dead, redis_timeout=0.5)

    def admit(key: str) -> Any:
        return run(limiter.admit(limiter.request([{key: "x"}])))

    assert [admit("open").status for _ in range(2)] == [0, 0]  # no slot, and no limit
    closed = admit("closed")
    assert (closed.status, dict(closed.headers)["Retry-After"]) == (429, "1")
    assert json.loads(closed.body)["limits"] == [{"name": "closed", "concurrency": 1}]
    assert admit("envoy").status == 503
    run(limiter.close())


def test_a_cluster_store_is_refused_for_a_config_with_concurrency_limits(
    write_config: Callable[[str], Path],
) -> None:
    """Slots are one sorted set per key on one server; the cluster store keeps none (it is
    refused before it connects: nothing listens on port 1)."""
    with pytest.raises(ValueError, match="ClusterStore keeps no concurrency slots"):
        Limiter.from_config(write_config(CONFIG), "app", "redis+cluster://127.0.0.1:1")


def test_a_wsgi_response_holds_its_slot_until_the_server_closes_it(
    write_config: Callable[[str], Path], store_url: str | None
) -> None:
    limiter = Limiter.from_config(write_config(CONFIG), "app", store_url)
    app = flask.Flask(__name__)
    app.get("/")(lambda: "hello")
    app.wsgi_app = WSGIRateLimitMiddleware(app.wsgi_app, limiter)  # type: ignore[method-assign]
    tenant = {"x-tenant-id": "t1"}
    with app.test_client() as http:
        streaming = [http.get("/", headers=tenant, buffered=False) for _ in range(2)]
        assert [r.status_code for r in streaming] == [200, 200]
        refused = http.get("/", headers=tenant)
        assert refused.status_code == 429
        streaming[0].close()  # the server is done with it: the slot comes back
        assert http.get("/", headers=tenant).status_code == 200
        streaming[1].close()
    limiter.close_sync()


class SlowStore(MemoryStore):
    """The memory store, whose rate decisions wait until let through."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.go_on = asyncio.Event()

    async def apply(self, hits: Sequence[Hit]) -> list[Outcome]:
        self.entered.set()
        await self.go_on.wait()
        return await super().apply(hits)


def test_a_request_cancelled_while_its_rate_is_decided_gives_its_slot_back(
    write_config: Callable[[str], Path], run: Run
) -> None:
    store = SlowStore()
    limiter = Limiter(Engine(load_config([write_config(CONFIG)]), store), "app")
    request = limiter.request([{"tenant": "rated"}, {"tenant": "rated", "rate": "x"}])

    async def cancelled_then_admitted() -> bool:
        pending = asyncio.ensure_future(limiter.admit(request))
        await store.entered.wait()  # its slot taken, its rate being decided
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        store.go_on.set()
        # `concurrency: 1`: taken again only if the cancelled request gave it back.
        admission = await limiter.admit(limiter.request([{"tenant": "rated"}]))
        await admission.end()
        return admission.admitted

    assert run(cancelled_then_admitted())
