"""The dynamic metadata of answers, as the reference builds it (its service's
ratelimitToMetadata: domain, descriptors, hitsAddend, the merged `metadata` of the limits
passed), plus the limits that fired, on every store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from ratelimitd.core.dynamic_metadata import decision_fields, request_fields
from ratelimitd.core.engine import Engine
from ratelimitd.core.problem import BodyMode
from ratelimitd.model.messages import Descriptor, LimitOverride, Request
from ratelimitd.model.rules import Config, Unit
from tests.config_files import load_text
from tests.stores import Driver

CONFIG = """
domain: web
descriptors:
  - key: tenant
    metadata: {team: payments, routing: {pool: a, zone: x}, tier: gold}
    rate_limit: {unit: minute, requests_per_unit: 2, name: per_tenant}
    descriptors:
      - key: path
        metadata: {team: search, routing: {pool: b, lane: fast}, weight: 3}
        rate_limit: {unit: minute, requests_per_unit: 1, name: per_path}
  - key: route
    metadata: {routing: {pool: c, extra: 1}, owner: edge, team: other}
    rate_limit: {unit: minute, requests_per_unit: 5}
  - key: free
    metadata: {free: true}
    rate_limit: {unlimited: true}
  - key: old
    metadata: {old: true}
    rate_limit: {unit: minute, requests_per_unit: 5, name: old}
  - key: new
    rate_limit: {unit: minute, requests_per_unit: 5, replaces: [{name: old}]}
"""

PATH = Descriptor((("tenant", "t1"), ("path", "/a")))
ROUTE = Descriptor((("route", "r"),))


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_text(tmp_path, CONFIG)


def answer(
    driver: Driver, loop: asyncio.AbstractEventLoop, config: Config, request: Request
) -> dict[str, object]:
    engine = Engine(config, driver.store)
    decision = loop.run_until_complete(engine.should_rate_limit(request))
    return request_fields(request) | decision_fields(decision.statuses)


def test_metadata_of_the_matched_nodes_merged_first_wins(
    driver: Driver, loop: asyncio.AbstractEventLoop, config: Config
) -> None:
    request = Request("web", (PATH, ROUTE))
    assert answer(driver, loop, config, request) == {
        "domain": "web",
        "descriptors": [{"entries": ["tenant=t1", "path=/a"]}, {"entries": ["route=r"]}],
        # Only the matched node's (path, not its parent tenant's); plain values: the first
        # descriptor's; mappings under one key: merged.
        "metadata": {
            "team": "search",
            "routing": {"pool": "b", "lane": "fast", "extra": 1.0},
            "weight": 3.0,
            "owner": "edge",
        },
    }


def test_a_limit_over_gives_no_metadata_but_is_named(
    driver: Driver, loop: asyncio.AbstractEventLoop, config: Config
) -> None:
    request = Request("web", (PATH, ROUTE))
    answer(driver, loop, config, request)
    fields = answer(driver, loop, config, request)  # per_path: 1 a minute
    assert fields["metadata"] == {
        "routing": {"pool": "c", "extra": 1.0},
        "owner": "edge",
        "team": "other",
    }
    assert fields["overLimit"] == [{"name": "per_path", "remaining": 0.0, "resetSeconds": 60.0}]
    assert fields["firedLimit"] == "per_path"


THREE = """
domain: web
descriptors:
  - key: a
    rate_limit: {unit: minute, requests_per_unit: 1, name: minutely}
  - key: b
    rate_limit: {unit: hour, requests_per_unit: 1, name: hourly}
  - key: c
    rate_limit: {unit: hour, requests_per_unit: 1}
"""
ALL_THREE = Request("web", tuple(Descriptor(((k, "x"),)) for k in "abc"))


def test_the_fired_limit_is_the_longest_wait(
    driver: Driver, loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    config = load_text(tmp_path, THREE)
    answer(driver, loop, config, ALL_THREE)
    driver.clock.advance(1)
    fields = answer(driver, loop, config, ALL_THREE)
    assert fields["overLimit"] == [
        {"name": "minutely", "remaining": 0.0, "resetSeconds": 59.0},
        {"name": "hourly", "remaining": 0.0, "resetSeconds": 3599.0},
        {"name": "web.c", "remaining": 0.0, "resetSeconds": 3599.0},
    ]
    assert fields["firedLimit"] == "hourly"  # the first of the longest waits


def test_the_problem_body_names_the_fired_limit(
    driver: Driver, loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    engine = Engine(load_text(tmp_path, THREE), driver.store, body_mode=BodyMode.PROBLEM_JSON)
    loop.run_until_complete(engine.should_rate_limit(ALL_THREE))
    driver.clock.advance(1)
    decision = loop.run_until_complete(engine.should_rate_limit(ALL_THREE))
    problem = json.loads(decision.body)
    assert problem["fired_limit"] == "hourly"
    assert problem["retry_after_seconds"] == 3599
    assert [limit["name"] for limit in problem["limits"]] == ["minutely", "hourly", "web.c"]


def test_unlimited_and_replaced_limits_give_no_metadata(
    driver: Driver, loop: asyncio.AbstractEventLoop, config: Config
) -> None:
    request = Request(
        "web",
        (
            Descriptor((("free", "x"),)),
            Descriptor((("old", "x"),)),
            Descriptor((("new", "x"),)),
        ),
    )
    assert "metadata" not in answer(driver, loop, config, request)


def test_an_unknown_domain_still_carries_the_request(
    driver: Driver, loop: asyncio.AbstractEventLoop, config: Config
) -> None:
    request = Request(
        "nowhere",
        (Descriptor((("k", "v"),), LimitOverride(10, Unit.SECOND), 2),),
        hits_addend=4,
    )
    assert answer(driver, loop, config, request) == {
        "domain": "nowhere",
        "hitsAddend": 4.0,
        "descriptors": [
            {"entries": ["k=v"], "limit": "requests_per_unit:10 unit:SECOND", "hitsAddend": 2.0}
        ],
    }


def test_merging_leaves_the_rules_metadata_as_configured(
    driver: Driver, loop: asyncio.AbstractEventLoop, config: Config
) -> None:
    before = [rule.metadata for rule in config.rules]
    for _ in range(2):
        answer(driver, loop, config, Request("web", (PATH, ROUTE)))
    path_rule = next(rule for rule in config.rules if rule.name == "per_path")
    assert path_rule.metadata == {
        "team": "search",
        "routing": {"pool": "b", "lane": "fast"},
        "weight": 3.0,
    }
    assert [rule.metadata for rule in config.rules] == before
