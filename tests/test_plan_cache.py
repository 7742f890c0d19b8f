"""The transport side's plan cache: a repeated request reuses its plan until the engine's
config is replaced (a reload), and the cache stays bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from ratelimitd.config.loader import load_config
from ratelimitd.core.engine import Engine
from ratelimitd.core.plan import Plan
from ratelimitd.model.messages import Descriptor, Request
from ratelimitd.model.rules import Config
from ratelimitd.storage.clock import FakeClock
from ratelimitd.storage.memory import MemoryStore
from ratelimitd.transports import plan_cache
from ratelimitd.transports.plan_cache import PlanCache

REQUEST = Request("d", (Descriptor((("k", "v"),)),))


def config(tmp_path: Path, per_minute: int) -> Config:
    path = tmp_path / f"d{per_minute}.yaml"
    path.write_text(
        f"domain: d\ndescriptors:\n  - key: k\n"
        f"    rate_limit: {{unit: minute, requests_per_unit: {per_minute}}}\n"
    )
    return load_config([path])


def limit_of(plan: Plan) -> int:
    (found,) = plan.matches
    assert found is not None
    assert found.rule.limit is not None
    return found.rule.limit.requests_per_unit


def test_wire_plans_are_reused_until_the_config_is_replaced(tmp_path: Path) -> None:
    engine = Engine(config(tmp_path, 5), MemoryStore(FakeClock()))
    plans = PlanCache(engine)
    decoded: list[bytes] = []

    def decode(data: bytes) -> Request:
        decoded.append(data)
        return REQUEST

    first = plans.for_wire(b"r", decode)
    assert plans.for_wire(b"r", decode) is first
    assert decoded == [b"r"]
    engine.config = config(tmp_path, 7)
    again = plans.for_wire(b"r", decode)
    assert decoded == [b"r", b"r"]
    assert (limit_of(first), limit_of(again)) == (5, 7)


def test_built_requests_share_a_plan_until_the_config_is_replaced(tmp_path: Path) -> None:
    engine = Engine(config(tmp_path, 5), MemoryStore(FakeClock()))
    plans = PlanCache(engine)
    first = plans.for_request(REQUEST)
    assert plans.for_request(Request("d", (Descriptor((("k", "v"),)),))) is first
    engine.config = config(tmp_path, 7)
    assert limit_of(plans.for_request(REQUEST)) == 7


def test_a_full_cache_starts_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan_cache, "PLAN_CACHE_SIZE", 2)
    plans = PlanCache(Engine(config(tmp_path, 5), MemoryStore(FakeClock())))
    kept = [plans.for_wire(data, lambda _: REQUEST) for data in (b"a", b"b")]
    assert plans.for_wire(b"a", lambda _: REQUEST) is kept[0]
    plans.for_wire(b"c", lambda _: REQUEST)  # the third: the first two go
    assert plans.for_wire(b"a", lambda _: REQUEST) is not kept[0]
