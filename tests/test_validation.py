"""Bounds on hostile input: per-request limits, and every cache or table a client's values can
grow staying bounded."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ratelimitd.algorithms import Hit
from ratelimitd.config.loader import load_config
from ratelimitd.core import keys
from ratelimitd.core.engine import Engine
from ratelimitd.core.validation import RequestLimits, validate
from ratelimitd.model.messages import Descriptor, InvalidRequestError, Request
from ratelimitd.model.rules import Limit, Unit
from ratelimitd.storage.clock import FakeClock
from ratelimitd.storage.memory import MemoryStore
from ratelimitd.transports import plan_cache
from ratelimitd.transports.plan_cache import PlanCache

LIMITS = RequestLimits(max_descriptors=2, max_entries=2, max_key_length=3, max_value_length=4)


def request(*descriptors: tuple[tuple[str, str], ...], domain: str = "d") -> Request:
    return Request(domain, tuple(Descriptor(entries) for entries in descriptors))


def test_a_request_at_every_bound_is_valid() -> None:
    validate(request((("abc", "wxyz"), ("k", "")), (("k", "v"),), domain="dom"), LIMITS)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            request((("k", "v"),), domain="doma"),
            "domain is 4 characters long; at most 3 are allowed",
        ),
        (
            request((("k", "v"),), (("k", "v"),), (("k", "v"),)),
            r"3 descriptors; at most 2 are allowed \(--max-descriptors\)",
        ),
        (
            request((("a", "v"), ("b", "v"), ("c", "v"))),
            r"descriptor 0 has 3 entries; at most 2 are allowed \(--max-entries\)",
        ),
        (
            request((("k", "v"),), (("k", "v"), ("abcd", "v"))),
            r"descriptor 1 entry 1 key is 4 characters long; at most 3 are allowed "
            r"\(--max-key-length\)",
        ),
        (
            request((("k", "vwxyz"),)),
            r"descriptor 0 entry 0 value is 5 characters long; at most 4 are allowed "
            r"\(--max-value-length\)",
        ),
        (request((("k", "v"),), domain=""), "domain must not be empty"),
        (request(), "at least one descriptor"),
        (request(()), "descriptor 0 has no entries"),
        (request((("k", "v"), ("", "v"))), "descriptor 0 entry 1 has an empty key"),
    ],
)
def test_a_request_past_a_bound_is_refused_naming_it(bad: Request, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        validate(bad, LIMITS)


def test_the_engine_checks_its_limits(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text("domain: d\ndescriptors:\n  - key: k\n")
    bounded = Engine(load_config([path]), MemoryStore(FakeClock()), request_limits=LIMITS)
    with pytest.raises(InvalidRequestError, match="--max-value-length"):
        asyncio.run(bounded.should_rate_limit(request((("k", "vwxyz"),))))


def test_the_memory_store_drops_the_counter_due_first_past_its_size() -> None:
    clock = FakeClock()
    store = MemoryStore(clock, max_keys=3)
    per_second = Limit("token_bucket", 1, Unit.SECOND, 1)
    per_hour = Limit("token_bucket", 1, Unit.HOUR, 1)

    def take(key: str, limit: Limit) -> bool:
        return asyncio.run(store.apply([Hit(key, limit, 1, False)]))[0].admitted

    assert take("hour-a", per_hour)
    assert take("second", per_second)
    assert take("hour-b", per_hour)
    assert take("hour-c", per_hour)  # the fourth: "second" goes, due to refill first
    assert len(store) == 3
    assert not take("hour-a", per_hour)  # the others kept their state
    assert not take("hour-b", per_hour)
    assert not take("hour-c", per_hour)
    clock.advance(1)
    assert take("hour-d", per_hour)  # "hour-a" is due first now
    assert len(store) == 3
    assert take("hour-a", per_hour)


def test_the_plan_cache_keeps_only_small_requests(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text("domain: d\ndescriptors:\n  - key: k\n")
    bounded = PlanCache(Engine(load_config([path]), MemoryStore(FakeClock())))
    built: list[bytes] = []

    def build(data: bytes) -> Request:
        built.append(data)
        return request((("k", "v"),))

    def plan(data: bytes) -> None:
        bounded.for_wire(data, build)

    small, large = b"s", b"L" * (plan_cache.PLAN_CACHE_MAX_REQUEST_BYTES + 1)
    for data in (small, small, large, large):
        plan(data)
    assert built == [small, large, large]


def test_the_counter_key_cache_skips_long_entries() -> None:
    limit = Limit("token_bucket", 1, Unit.SECOND, 1)
    keys._cached_counter_key.cache_clear()
    short = (("k", "v" * 10),)
    long = (("k", "v" * (keys._CACHED_ENTRIES_CHARS + 1)),)
    for entries in (short, long, short, long):
        keys.counter_key("d", entries, limit, "tb")
    info = keys._cached_counter_key.cache_info()
    assert (info.hits, info.misses, info.currsize) == (1, 1, 1)
    assert keys.counter_key("d", long, limit, "tb") == keys._counter_key(
        "d", long, limit, "tb", None, keys.DEFAULT_PREFIX
    )
