"""The circuit breaker's state machine, on a fake clock, guarding the round trips of a fake
store that fails when told to: when it opens, that an open circuit never calls the store
(so never waits on it), when it lets one probe through, and what the probe's result does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from ratelimitd.algorithms import Hit, Outcome
from ratelimitd.model.rules import Limit, Unit
from ratelimitd.storage.base import StoreError
from ratelimitd.storage.breaker import BreakerState, CircuitBreaker

THRESHOLD = 3
COOLDOWN_S = 10.0
HITS = (Hit("k", Limit("token_bucket", 5, Unit.MINUTE, 5), 1),)
OUTCOMES = [Outcome(True, 4, 0)]

Run = Callable[[Coroutine[Any, Any, Any]], Any]


class FakeClock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeStore:
    """Round trips that answer OUTCOMES, or fail while `failing`, counting those that reach
    it. While `held` is set, each waits until it is released."""

    def __init__(self) -> None:
        self.failing = False
        self.calls = 0
        self.held: asyncio.Event | None = None

    async def round_trip(self) -> list[Outcome]:
        self.calls += 1
        if self.held is not None:
            await self.held.wait()
        if self.failing:
            raise StoreError("down")
        return OUTCOMES


def apply(breaker: CircuitBreaker, store: FakeStore) -> Coroutine[Any, Any, list[Outcome]]:
    """A round trip of requests through the breaker, as the stores send one."""
    return breaker.call(store.round_trip)


async def peek(breaker: CircuitBreaker, store: FakeStore) -> list[Outcome]:
    """A dry run, as the stores send one: refused unless closed, never counted."""
    breaker.check_closed()
    return await store.round_trip()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(threshold=THRESHOLD, cooldown_s=COOLDOWN_S, clock=clock)


def state(breaker: CircuitBreaker) -> BreakerState:
    """The breaker's state now (a call, so that type checkers do not assume it unchanged)."""
    return breaker.state


async def failed(call: Coroutine[Any, Any, Any]) -> bool:
    """Whether the call raised StoreError."""
    try:
        await call
    except StoreError:
        return True
    return False


def fails(run: Run, call: Coroutine[Any, Any, Any]) -> bool:
    """Whether the call, run to completion, raised StoreError."""
    return bool(run(failed(call)))


def open_circuit(run: Run, breaker: CircuitBreaker, store: FakeStore) -> None:
    store.failing = True
    for _ in range(THRESHOLD):
        assert fails(run, apply(breaker, store))
    assert state(breaker) is BreakerState.OPEN


def test_it_opens_after_threshold_consecutive_failures_only(
    run: Run, breaker: CircuitBreaker, store: FakeStore
) -> None:
    store.failing = True
    for _ in range(THRESHOLD - 1):
        assert fails(run, apply(breaker, store))
    store.failing = False
    assert run(apply(breaker, store)) == OUTCOMES  # a success starts the count again
    store.failing = True
    for _ in range(THRESHOLD - 1):
        assert fails(run, apply(breaker, store))
    assert state(breaker) is BreakerState.CLOSED
    assert fails(run, apply(breaker, store))
    assert state(breaker) is BreakerState.OPEN
    assert store.calls == 2 * THRESHOLD


def test_an_open_circuit_fails_at_once_without_calling_the_store(
    run: Run, breaker: CircuitBreaker, store: FakeStore, clock: FakeClock
) -> None:
    open_circuit(run, breaker, store)
    calls = store.calls
    store.failing = False  # the store is back, but the cooldown is not over
    clock.now = COOLDOWN_S - 0.001
    for _ in range(10):
        assert fails(run, apply(breaker, store))
    assert fails(run, peek(breaker, store))
    assert store.calls == calls
    assert state(breaker) is BreakerState.OPEN


def test_after_the_cooldown_one_probe_goes_through_and_its_success_closes_the_circuit(
    run: Run, breaker: CircuitBreaker, store: FakeStore, clock: FakeClock
) -> None:
    open_circuit(run, breaker, store)
    calls = store.calls
    store.failing = False
    clock.now = COOLDOWN_S

    async def probe_and_others() -> tuple[list[Outcome], list[bool]]:
        store.held = asyncio.Event()
        probe = asyncio.ensure_future(apply(breaker, store))
        await asyncio.sleep(0)  # the probe is now waiting inside the store
        assert state(breaker) is BreakerState.HALF_OPEN
        others = [await failed(apply(breaker, store)) for _ in range(5)]
        store.held.set()
        return await probe, others

    outcomes, others = run(probe_and_others())
    assert outcomes == OUTCOMES
    assert others == [True] * 5  # failed at once: one probe at a time
    assert store.calls == calls + 1
    assert state(breaker) is BreakerState.CLOSED
    store.held = None
    assert run(apply(breaker, store)) == OUTCOMES


def test_a_failed_probe_opens_the_circuit_for_another_cooldown(
    run: Run, breaker: CircuitBreaker, store: FakeStore, clock: FakeClock
) -> None:
    open_circuit(run, breaker, store)
    clock.now = COOLDOWN_S
    assert fails(run, apply(breaker, store))  # the probe, still failing
    assert state(breaker) is BreakerState.OPEN
    calls = store.calls
    clock.now = 2 * COOLDOWN_S - 0.001
    assert fails(run, apply(breaker, store))
    assert store.calls == calls
    clock.now = 2 * COOLDOWN_S
    store.failing = False
    assert run(apply(breaker, store)) == OUTCOMES
    assert state(breaker) is BreakerState.CLOSED


def test_peeks_neither_probe_nor_count_towards_opening(
    run: Run, breaker: CircuitBreaker, store: FakeStore, clock: FakeClock
) -> None:
    store.failing = True
    for _ in range(THRESHOLD + 2):
        assert fails(run, peek(breaker, store))
    assert state(breaker) is BreakerState.CLOSED
    open_circuit(run, breaker, store)
    store.failing = False
    clock.now = COOLDOWN_S
    calls = store.calls
    assert fails(run, peek(breaker, store))  # no probe
    assert (store.calls, state(breaker)) == (calls, BreakerState.OPEN)
