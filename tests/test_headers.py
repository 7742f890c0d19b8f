"""Rate limit headers in each style, and the problem+json body, from real decisions."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from ratelimitd.config.loader import load_config
from ratelimitd.core.engine import Engine
from ratelimitd.core.headers import HeaderMode, sf_string
from ratelimitd.core.problem import BodyMode
from ratelimitd.model.messages import Code, Decision, Descriptor, Request
from ratelimitd.storage.clock import FakeClock
from ratelimitd.storage.memory import MemoryStore

CONFIG = """
domain: h
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 3, name: per_tenant}
  - key: ip
    rate_limit: {unit: second, requests_per_unit: 10}
  - key: bursty
    rate_limit: {unit: minute, requests_per_unit: 100, burst: 150, name: bursty}
"""

Decide = Callable[..., Decision]


@pytest.fixture
def make(
    tmp_path: Path, run: Callable[[Coroutine[Any, Any, Decision]], Decision]
) -> Callable[..., Decide]:
    path = tmp_path / "h.yaml"
    path.write_text(CONFIG)
    config = load_config([path])

    def build(mode: HeaderMode, body: BodyMode = BodyMode.NONE) -> Decide:
        engine = Engine(config, MemoryStore(FakeClock()), header_mode=mode, body_mode=body)

        def decide(*pairs: tuple[str, str]) -> Decision:
            descriptors = tuple(Descriptor((pair,)) for pair in pairs)
            return run(engine.should_rate_limit(Request("h", descriptors)))

        return decide

    return build


def test_ietf_fields_list_every_limit(make: Callable[..., Decide]) -> None:
    decide = make(HeaderMode.IETF)
    fields = dict(decide(("tenant", "a"), ("ip", "1.2.3.4")).response_headers)
    assert fields == {
        "RateLimit-Policy": '"per_tenant";q=3;w=60, "h.ip";q=10;w=1',
        "RateLimit": '"per_tenant";r=2;t=20, "h.ip";r=9;t=1',
    }


def test_ietf_names_a_limit_matched_twice_once(make: Callable[..., Decide]) -> None:
    decide = make(HeaderMode.IETF)
    decide(("tenant", "a"))
    fields = dict(decide(("tenant", "a"), ("tenant", "b")).response_headers)
    assert fields["RateLimit"] == '"per_tenant";r=1;t=40'


def test_legacy_fields_are_the_references(make: Callable[..., Decide]) -> None:
    decide = make(HeaderMode.LEGACY)
    for _ in range(3):
        decide(("tenant", "a"))
    decision = decide(("ip", "x"), ("tenant", "a"))
    assert decision.code is Code.OVER_LIMIT
    assert dict(decision.response_headers) == {
        "Retry-After": "20",
        "RateLimit-Limit": "3",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "20",
    }


def test_xratelimit_matches_envoys_own_choice_of_the_fewest_remaining(
    make: Callable[..., Decide],
) -> None:
    decide = make(HeaderMode.XRATELIMIT)
    fields = dict(decide(("ip", "x"), ("tenant", "a")).response_headers)
    assert fields["X-RateLimit-Limit"] == '3, 10;w=1, 3;w=60;name="per_tenant"'
    assert fields["X-RateLimit-Remaining"] == "2"


def test_burst_shows_as_capacity_and_parameter(make: Callable[..., Decide]) -> None:
    xrl = dict(make(HeaderMode.XRATELIMIT)(("bursty", "x")).response_headers)
    assert xrl["X-RateLimit-Limit"] == '150, 100;w=60;name="bursty";burst=150'
    ietf = dict(make(HeaderMode.IETF)(("bursty", "x")).response_headers)
    assert ietf["RateLimit-Policy"] == '"bursty";q=150;w=60'
    assert ietf["RateLimit"].startswith('"bursty";r=149;')


def test_none_keeps_only_retry_after(make: Callable[..., Decide]) -> None:
    decide = make(HeaderMode.NONE)
    assert decide(("tenant", "a")).response_headers == ()
    for _ in range(2):
        decide(("tenant", "a"))
    assert decide(("tenant", "a")).response_headers == (("Retry-After", "20"),)


def test_problem_json_body_names_the_exceeded_limits(make: Callable[..., Decide]) -> None:
    decide = make(HeaderMode.NONE, BodyMode.PROBLEM_JSON)
    assert decide(("tenant", "a")).body == b""
    for _ in range(2):
        decide(("tenant", "a"))
    decision = decide(("tenant", "a"), ("ip", "x"))
    assert ("Content-Type", "application/problem+json") in decision.response_headers
    problem = json.loads(decision.body)
    assert problem["status"] == 429
    assert problem["title"] == "Too Many Requests"
    assert problem["retry_after_seconds"] == 20
    assert problem["limits"] == [
        {
            "name": "per_tenant",
            "requests_per_unit": 3,
            "unit": "minute",
            "remaining": 0,
            "reset_seconds": 20,
        }
    ]
    assert "'per_tenant'" in problem["detail"]


def test_sf_string_escapes() -> None:
    assert sf_string('a"b\\c') == '"a\\"b\\\\c"'
    assert sf_string("é") == '"%C3%A9"'
