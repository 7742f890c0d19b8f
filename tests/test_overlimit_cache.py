"""The local over-limit cache: rejections answered without the store, exactly."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ratelimitd.algorithms import Hit, Outcome
from ratelimitd.config.loader import load_config
from ratelimitd.core.engine import Engine
from ratelimitd.core.headers import whole_seconds
from ratelimitd.core.overlimit_cache import OverLimitCache
from ratelimitd.model.messages import Code, Decision, Descriptor, Request, Result
from ratelimitd.storage.clock import FakeClock
from ratelimitd.storage.memory import MemoryStore

CONFIG = """
domain: c
descriptors:
  - key: tb
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: gcra
    rate_limit: {unit: minute, requests_per_unit: 3, algorithm: gcra}
  - key: fw
    rate_limit: {unit: minute, requests_per_unit: 3, algorithm: fixed_window}
  - key: sw
    rate_limit: {unit: minute, requests_per_unit: 3, algorithm: sliding_window}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: wide
    rate_limit: {unit: minute, requests_per_unit: 100}
"""

Run = Callable[[Coroutine[Any, Any, Decision]], Decision]


class CountingStore(MemoryStore):
    """The memory store, counting how often it is asked and how long each call 'takes'."""

    def __init__(self, clock: FakeClock, latency_us: int = 0) -> None:
        super().__init__(clock)
        self.calls = 0
        self._fake_clock = clock
        self._latency_us = latency_us

    async def apply(self, hits: Sequence[Hit]) -> list[Outcome]:
        self.calls += 1
        self._fake_clock.advance(us=self._latency_us)
        return await super().apply(hits)


class Setup:
    def __init__(self, path: Path, run: Run, latency_us: int = 0, size: int = 100) -> None:
        self.clock = FakeClock()
        self.store = CountingStore(self.clock, latency_us)
        self.cache = OverLimitCache(size, self.clock)
        self.engine = Engine(load_config([path]), self.store, over_limit_cache=self.cache)
        self.run = run

    def decide(self, *pairs: tuple[str, str], cost: int | None = None) -> Decision:
        descriptors = tuple(Descriptor((pair,), None, cost) for pair in pairs)
        return self.run(self.engine.should_rate_limit(Request("c", descriptors)))


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    return path


@pytest.mark.parametrize("key", ["tb", "gcra", "fw", "sw"])
def test_over_limit_key_is_answered_locally_until_it_may_pass(
    config_path: Path, run: Run, key: str
) -> None:
    setup = Setup(config_path, run)
    for _ in range(3):
        setup.decide((key, "x"))
    first = setup.decide((key, "x"))
    assert first.code is Code.OVER_LIMIT
    calls = setup.store.calls
    reset_us = first.statuses[0].reset_us
    assert reset_us is not None
    local = [setup.decide((key, "x")) for _ in range(5)]
    assert setup.store.calls == calls  # not asked
    assert all(d.code is Code.OVER_LIMIT for d in local)
    assert local[0].statuses[0].result is Result.LOCAL_CACHE_HIT
    # Told in whole seconds, rounded up, as every answer shows it.
    assert local[0].statuses[0].reset_us == whole_seconds(reset_us) * 1_000_000
    setup.clock.advance(us=reset_us)
    assert setup.decide((key, "x")).code is Code.OK
    assert setup.store.calls == calls + 1


@pytest.mark.parametrize("key", ["tb", "gcra", "fw", "sw"])
def test_a_request_with_a_limit_not_known_over_asks_the_store(
    config_path: Path, run: Run, key: str
) -> None:
    # Issue 16: its other limits read OK, unmeasured, when the cache answered it.
    setup = Setup(config_path, run)
    for _ in range(4):
        setup.decide((key, "x"))
    calls = setup.store.calls
    decision = setup.decide((key, "x"), ("wide", "y"))
    assert setup.store.calls == calls + 1
    assert decision.code is Code.OVER_LIMIT
    assert [s.code for s in decision.statuses] == [Code.OVER_LIMIT, Code.OK]
    assert decision.statuses[1].remaining == 100  # measured, and never charged
    assert setup.decide(("wide", "y")).statuses[0].remaining == 99


def test_a_plan_gets_one_local_answer_per_second_of_wait(config_path: Path, run: Run) -> None:
    setup = Setup(config_path, run)
    for _ in range(4):
        setup.decide(("fw", "x"))
    plan = setup.engine.plan(Request("c", (Descriptor((("fw", "x"),)),)))
    first = run(setup.engine.decide(plan))
    assert first.statuses[0].result is Result.LOCAL_CACHE_HIT
    assert run(setup.engine.decide(plan)) is first  # decided once, answered again
    setup.clock.advance(us=1_000_000)
    later = run(setup.engine.decide(plan))
    assert later is not first
    assert later.statuses[0].reset_us == (first.statuses[0].reset_us or 0) - 1_000_000


def test_a_smaller_cost_is_asked_again(config_path: Path, run: Run) -> None:
    setup = Setup(config_path, run)
    setup.decide(("tb", "x"), cost=2)
    assert setup.decide(("tb", "x"), cost=2).code is Code.OVER_LIMIT
    calls = setup.store.calls
    assert setup.decide(("tb", "x"), cost=1).code is Code.OK
    assert setup.store.calls == calls + 1


def test_deadline_counts_from_when_the_request_was_sent(config_path: Path, run: Run) -> None:
    setup = Setup(config_path, run, latency_us=400_000)
    for _ in range(3):
        setup.decide(("fw", "x"))
    sent_at = setup.clock()
    judged = setup.decide(("fw", "x"))  # the store judges 0.4 s after it was asked
    true_reset = judged.statuses[0].reset_us
    assert true_reset is not None
    local = setup.decide(("fw", "x"))
    assert local.statuses[0].result is Result.LOCAL_CACHE_HIT
    # Counted from the send: 0.4 s before the store's own deadline, never after it (in
    # whole seconds, rounded up, as answers show it).
    wait_s = whole_seconds(sent_at + true_reset - setup.clock())
    assert local.statuses[0].reset_us == wait_s * 1_000_000
    calls = setup.store.calls
    setup.clock.advance(us=local.statuses[0].reset_us or 0)
    setup.decide(("fw", "x"))
    assert setup.store.calls == calls + 1


def test_shadow_and_repeated_keys_are_never_cached(config_path: Path, run: Run) -> None:
    setup = Setup(config_path, run)
    setup.decide(("shadow", "x"))
    setup.decide(("shadow", "x"))
    setup.decide(("tb", "d"), ("tb", "d"))
    setup.decide(("tb", "d"), ("tb", "d"))
    assert len(setup.cache) == 0


def test_the_cache_is_bounded_and_evicts_the_least_recent(config_path: Path, run: Run) -> None:
    setup = Setup(config_path, run, size=2)
    for value in ("a", "b", "c"):
        for _ in range(4):
            setup.decide(("fw", value))
    assert len(setup.cache) == 2
    calls = setup.store.calls
    setup.decide(("fw", "a"))  # evicted: asked again
    assert setup.store.calls == calls + 1


KEYS = ["tb", "gcra", "fw", "sw", "shadow", "wide"]
traffic = st.lists(
    st.tuples(
        st.integers(0, 30_000_000),  # time step, microseconds
        st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from("ab")), min_size=1, max_size=3),
        st.sampled_from([None, 0, 1, 2]),
    ),
    max_size=40,
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sequence=traffic)
def test_the_cache_changes_no_decision(
    sequence: list[tuple[int, list[tuple[str, str]], int | None]], config_path: Path, run: Run
) -> None:
    cached = Setup(config_path, run)
    config = load_config([config_path])
    plain_clock = FakeClock()
    plain = Engine(config, MemoryStore(plain_clock))
    for step, pairs, cost in sequence:
        cached.clock.advance(us=step)
        plain_clock.advance(us=step)
        descriptors = tuple(Descriptor((pair,), None, cost) for pair in pairs)
        request = Request("c", descriptors)
        expected = run(plain.should_rate_limit(request))
        got = run(cached.engine.should_rate_limit(request))
        assert got.code is expected.code
        # Every limit gets its own verdict, answered locally or not.
        assert [s.code for s in got.statuses] == [s.code for s in expected.statuses]
