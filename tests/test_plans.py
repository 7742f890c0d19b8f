"""Per-tenant quotas: plans, tenants, overrides, the default plan, split files, and every
validation error; and a plan-based config deciding exactly as its hand-written expansion."""

from __future__ import annotations

import asyncio
import random
import textwrap
from pathlib import Path

import pytest

from ratelimitd.config.errors import InvalidConfigError
from ratelimitd.config.loader import load_config
from ratelimitd.core.engine import Engine
from ratelimitd.core.matcher import match
from ratelimitd.model.messages import Code, Decision, Descriptor, Request
from ratelimitd.model.rules import Config
from ratelimitd.storage.clock import FakeClock
from ratelimitd.storage.memory import MemoryStore

PLANS = """
domain: api
tenant_key: tenant
default_plan: free
plans:
  free:
    rate_limit: {unit: minute, requests_per_unit: 3}
    descriptors:
      - key: route
        value: /v1/search
        rate_limit: {unit: minute, requests_per_unit: 1, name: search}
  pro:
    extends: free
    rate_limit: {unit: minute, requests_per_unit: 10, burst: 20}
    descriptors:
      - key: route
        value: /v1/search
        rate_limit: {unit: minute, requests_per_unit: 5, name: search}
      - key: route
        value: /v1/export
        rate_limit: {unit: hour, requests_per_unit: 2}
tenants:
  acme: pro
  globex:
    plan: pro
    overrides:
      search: {requests_per_unit: 7}
      pro: {requests_per_unit: 30}
  initech:
    plan: free
    overrides:
      free: {unlimited: true}
"""

# PLANS written out by hand as ordinary descriptors.
EXPANDED = """
domain: api
descriptors:
  - key: tenant
    value: acme
    rate_limit: {unit: minute, requests_per_unit: 10, burst: 20}
    descriptors:
      - key: route
        value: /v1/search
        rate_limit: {unit: minute, requests_per_unit: 5}
      - key: route
        value: /v1/export
        rate_limit: {unit: hour, requests_per_unit: 2}
  - key: tenant
    value: globex
    rate_limit: {unit: minute, requests_per_unit: 30, burst: 20}
    descriptors:
      - key: route
        value: /v1/search
        rate_limit: {unit: minute, requests_per_unit: 7}
      - key: route
        value: /v1/export
        rate_limit: {unit: hour, requests_per_unit: 2}
  - key: tenant
    value: initech
    rate_limit: {unlimited: true}
    descriptors:
      - key: route
        value: /v1/search
        rate_limit: {unit: minute, requests_per_unit: 1}
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 3}
    descriptors:
      - key: route
        value: /v1/search
        rate_limit: {unit: minute, requests_per_unit: 1}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def config_of(tmp_path: Path, text: str = PLANS) -> Config:
    return load_config([write(tmp_path, "plans.yaml", text)])


def limit_of(config: Config, *pairs: tuple[str, str]) -> tuple[int, int] | None:
    """(requests_per_unit, burst) of the rule `pairs` reaches, None if none or unlimited."""
    found = match(config.domains["api"].root, pairs)
    if found is None or found.rule.limit is None:
        return None
    return found.rule.limit.requests_per_unit, found.rule.limit.burst


def errors_of(tmp_path: Path, *files: tuple[str, str]) -> list[str]:
    paths = [write(tmp_path, name, text) for name, text in files]
    with pytest.raises(InvalidConfigError) as raised:
        load_config(paths)
    return [str(error).replace(f"{tmp_path}/", "") for error in raised.value.errors]


def test_tenants_get_their_plans_and_unknown_tenants_the_default(tmp_path: Path) -> None:
    config = config_of(tmp_path)
    assert limit_of(config, ("tenant", "acme")) == (10, 20)
    assert limit_of(config, ("tenant", "acme"), ("route", "/v1/search")) == (5, 5)
    assert limit_of(config, ("tenant", "acme"), ("route", "/v1/export")) == (2, 2)
    assert limit_of(config, ("tenant", "nobody")) == (3, 3)
    assert limit_of(config, ("tenant", "nobody"), ("route", "/v1/search")) == (1, 1)
    assert limit_of(config, ("tenant", "nobody"), ("route", "/v1/export")) is None


def test_overrides_change_only_that_tenants_limits(tmp_path: Path) -> None:
    config = config_of(tmp_path)
    assert limit_of(config, ("tenant", "globex")) == (30, 20)  # a burst set apart stays
    assert limit_of(config, ("tenant", "globex"), ("route", "/v1/search")) == (7, 7)
    assert limit_of(config, ("tenant", "globex"), ("route", "/v1/export")) == (2, 2)
    assert limit_of(config, ("tenant", "initech")) is None  # overridden to unlimited
    assert limit_of(config, ("tenant", "acme"), ("route", "/v1/search")) == (5, 5)


def test_limits_are_named_for_metrics_headers_and_overrides(tmp_path: Path) -> None:
    config = config_of(tmp_path)
    root = config.domains["api"].root
    names = {
        pairs: found.rule.name
        for pairs in [
            (("tenant", "acme"),),
            (("tenant", "acme"), ("route", "/v1/search")),
            (("tenant", "acme"), ("route", "/v1/export")),
            (("tenant", "globex"), ("route", "/v1/search")),
        ]
        if (found := match(root, pairs)) is not None
    }
    assert list(names.values()) == ["pro", "search", "pro.route_/v1/export", "search"]


def test_rules_list_each_plan_once_and_overridden_tenants(tmp_path: Path) -> None:
    # What /rlconfig shows: a line per rule, not per tenant.
    keys = [rule.full_key for rule in config_of(tmp_path).rules]
    assert keys == [
        "api.tenant@free",
        "api.tenant@free.route_/v1/search",
        "api.tenant@pro",
        "api.tenant@pro.route_/v1/search",
        "api.tenant@pro.route_/v1/export",
        "api.tenant_globex",
        "api.tenant_globex.route_/v1/search",
        "api.tenant_initech",
    ]


def test_plans_share_rules_and_nodes_between_tenants(tmp_path: Path) -> None:
    text = PLANS + "".join(f"  t{i}: pro\n" for i in range(100))
    index = config_of(tmp_path, text).domains["api"].root["tenant"]
    assert len(index.exact) == 103
    assert index.exact["t1"].children is index.exact["t2"].children is index.exact["acme"].children
    assert index.exact["t1"].rule is index.exact["acme"].rule


def decide(engine: Engine, *pairs: tuple[str, str]) -> Decision:
    return asyncio.run(engine.should_rate_limit(Request("api", (Descriptor(pairs),))))


def test_a_plan_config_decides_as_its_hand_written_expansion(tmp_path: Path) -> None:
    plans_clock, expanded_clock = FakeClock(), FakeClock()
    planned = Engine(config_of(tmp_path), MemoryStore(plans_clock))
    expanded = Engine(
        load_config([write(tmp_path, "expanded.yaml", EXPANDED)]), MemoryStore(expanded_clock)
    )
    tenants = ["acme", "globex", "initech", "nobody", "someone"]
    routes = [None, "/v1/search", "/v1/export", "/v1/other"]
    rng = random.Random(7)
    seen_over = 0
    for _ in range(600):
        pairs: tuple[tuple[str, str], ...] = (("tenant", rng.choice(tenants)),)
        route = rng.choice(routes)
        if route is not None:
            pairs += (("route", route),)
        a, b = decide(planned, *pairs), decide(expanded, *pairs)
        assert (a.code, [s.remaining for s in a.statuses]) == (
            b.code,
            [s.remaining for s in b.statuses],
        ), pairs
        assert [s.reset_us for s in a.statuses] == [s.reset_us for s in b.statuses]
        seen_over += a.code is Code.OVER_LIMIT
        step = rng.choice([0, 0, 0, 1_000_000, 7_000_000])
        plans_clock.advance(us=step)
        expanded_clock.advance(us=step)
    assert seen_over > 50  # the sequence really reaches the limits


def test_default_plan_buckets_are_per_tenant(tmp_path: Path) -> None:
    engine = Engine(config_of(tmp_path), MemoryStore(FakeClock()))
    assert [decide(engine, ("tenant", "x")).code for _ in range(4)] == [Code.OK] * 3 + [
        Code.OVER_LIMIT
    ]
    assert decide(engine, ("tenant", "y")).code is Code.OK


def test_tenants_can_live_in_files_of_their_own(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf", "plans.yaml", PLANS)
    write(tmp_path / "conf", "tenants-a.yaml", "domain: api\ntenants:\n  hooli: pro\n")
    write(tmp_path / "conf", "tenants-b.yaml", "domain: api\ntenants:\n  umbrella: free\n")
    config = load_config([tmp_path / "conf"])
    assert limit_of(config, ("tenant", "hooli")) == (10, 20)
    assert limit_of(config, ("tenant", "umbrella")) == (3, 3)
    assert limit_of(config, ("tenant", "acme")) == (10, 20)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            PLANS.replace("  acme: pro", "  acme: prro"),
            "plans.yaml:22: unknown plan 'prro' (plans: free, pro); did you mean 'pro'?",
        ),
        (
            PLANS.replace("default_plan: free", "default_plan: fre"),
            "plans.yaml:3: unknown plan 'fre' (plans: free, pro); did you mean 'free'?",
        ),
        (
            PLANS.replace("extends: free", "extends: basic"),
            "plans.yaml:12: unknown plan 'basic' (plans: free, pro)",
        ),
        (
            PLANS.replace(
                "      search: {requests_per_unit: 7}", "      serch: {requests_per_unit: 7}"
            ),
            "plans.yaml:26: tenant 'globex' overrides limit 'serch', which plan 'pro' does not "
            "have (its limits: pro, pro.route_/v1/export, search)",
        ),
        (
            PLANS.replace("  acme: pro", "  acme: pro\n  acme: free"),
            "plans.yaml:23: tenant 'acme' listed twice (first at plans.yaml:22)",
        ),
        (
            PLANS.replace("tenant_key: tenant\n", ""),
            "plans.yaml:1: plans and tenants need a 'tenant_key'",
        ),
        (
            PLANS.replace("      pro: {requests_per_unit: 30}", "      pro: {burst: 0}"),
            "plans.yaml:27: 'burst' must be between 1 and 4294967295, got 0",
        ),
        (
            PLANS.replace(
                "      free: {unlimited: true}", "      free: {algorithm: fixed_window, burst: 5}"
            ),
            "plans.yaml:31: tenant 'initech': burst does not apply to fixed_window "
            "(only to gcra, token_bucket)",
        ),
    ],
    ids=[
        "unknown-plan",
        "unknown-default-plan",
        "unknown-parent",
        "override-of-missing-limit",
        "tenant-twice",
        "no-tenant-key",
        "bad-override-value",
        "override-burst-on-fixed-window",
    ],
)
def test_validation_errors_name_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    assert errors_of(tmp_path, ("plans.yaml", text)) == [expected]


def test_plans_extending_each_other_in_a_cycle(tmp_path: Path) -> None:
    text = PLANS.replace("  free:\n", "  free:\n    extends: pro\n")
    assert errors_of(tmp_path, ("plans.yaml", text)) == [
        "plans.yaml:13: plans extend each other in a cycle: free -> pro -> free"
    ]


def test_a_tenant_in_two_files_names_both(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        ("plans.yaml", PLANS),
        ("more.yaml", "domain: api\ntenants:\n  acme: free\n"),
    )
    assert errors == ["more.yaml:3: tenant 'acme' listed twice (first at plans.yaml:22)"]


def test_a_tenant_list_needs_a_file_with_the_plans(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, ("tenants.yaml", "domain: shop\ntenants:\n  acme: pro\n"))
    assert errors == ["tenants.yaml:1: tenants for domain 'shop', but no file defines its plans"]


def test_the_tenant_key_cannot_also_be_a_top_level_descriptor(tmp_path: Path) -> None:
    text = (
        PLANS
        + "descriptors:\n  - key: tenant\n    rate_limit: {unit: second, requests_per_unit: 1}\n"
    )
    errors = errors_of(tmp_path, ("plans.yaml", text))
    assert errors == [
        "plans.yaml:2: 'descriptors' already has key 'tenant' at the top level; with plans, "
        "the tenant key's nodes come from the plans"
    ]


def test_a_limit_name_used_twice_in_a_plan(tmp_path: Path) -> None:
    text = PLANS.replace(
        "rate_limit: {unit: hour, requests_per_unit: 2}",
        "rate_limit: {unit: hour, requests_per_unit: 2, name: search}",
    )
    errors = errors_of(tmp_path, ("plans.yaml", text))
    assert errors == ["plans.yaml:18: limit name 'search' is used twice in plan 'pro'"]


def test_errors_are_capped(tmp_path: Path) -> None:
    tenants = "".join(f"  t{i}: gold\n" for i in range(150))
    errors = errors_of(tmp_path, ("plans.yaml", PLANS + tenants))
    assert len(errors) == 101
    assert errors[-1] == "plans.yaml: 50 more errors not shown"


def test_the_shipped_example_loads_with_its_documented_limits() -> None:
    config = load_config([Path(__file__).parent.parent / "examples" / "multitenant"])
    root = config.domains["edge"].root
    search = (("route", "/v1/search"),)
    limits = {
        tenant: found.rule.limit.requests_per_unit
        for tenant in ("acme", "globex", "initech", "unlisted")
        if (found := match(root, (("tenant", tenant), *search))) and found.rule.limit
    }
    assert limits == {"acme": 100, "globex": 300, "initech": 10, "unlisted": 10}


def test_an_override_keeps_the_plans_overdraft(tmp_path: Path) -> None:
    text = PLANS.replace(
        "rate_limit: {unit: minute, requests_per_unit: 3}",
        "rate_limit: {unit: minute, requests_per_unit: 3, overdraft: true, max_overdraft: 9}",
    ).replace("      free: {unlimited: true}", "      free: {requests_per_unit: 4}")
    found = match(config_of(tmp_path, text).domains["api"].root, (("tenant", "initech"),))
    assert found is not None
    assert found.rule.limit is not None
    assert (found.rule.limit.requests_per_unit, found.rule.limit.overdraft) == (4, 9)
