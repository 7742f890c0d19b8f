"""Descriptor matching on configs loaded from YAML, rule by rule as the reference matches:
exact value, then wildcards in file order, then the key-only node; the limit only from the
node the last entry reaches; no backtracking; share_threshold."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from ratelimitd.config.loader import load_config
from ratelimitd.core.matcher import Match, match
from ratelimitd.model.rules import Domain

Load = Callable[[str], Domain]
Entries = Sequence[tuple[str, str]]


@pytest.fixture
def load(tmp_path: Path) -> Load:
    """Load a YAML string holding one domain and return that Domain."""
    counter = iter(range(1_000_000))

    def load_domain(text: str) -> Domain:
        path = tmp_path / f"config{next(counter)}.yaml"
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        config = load_config([path])
        (domain,) = config.domains.values()
        return domain

    return load_domain


def name_of(domain: Domain, entries: Entries) -> str | None:
    """The `name` of the rule the entries reach, or None when they reach no limit."""
    found = match(domain.root, entries)
    if found is None:
        return None
    assert found.rule.name is not None, "every rule in these tests has a name"
    return found.rule.name


PRECEDENCE = """
    domain: d
    descriptors:
      - key: user
        rate_limit: {unit: second, requests_per_unit: 1, name: key_only}
      - key: user
        value: "bo*"
        rate_limit: {unit: second, requests_per_unit: 2, name: wildcard}
      - key: user
        value: bob
        rate_limit: {unit: second, requests_per_unit: 3, name: exact}
"""


def test_exact_beats_wildcard_beats_key_only(load: Load) -> None:
    domain = load(PRECEDENCE)
    assert name_of(domain, [("user", "bob")]) == "exact"
    assert name_of(domain, [("user", "bobby")]) == "wildcard"
    assert name_of(domain, [("user", "bo")]) == "wildcard"
    assert name_of(domain, [("user", "alice")]) == "key_only"


def test_match_returns_the_configured_rule(load: Load) -> None:
    domain = load(PRECEDENCE)
    found = match(domain.root, [("user", "bob")])
    assert found is not None
    rule = domain.root["user"].exact["bob"].rule
    assert rule is not None
    assert found == Match(rule, None)
    assert found.rule is rule
    assert found.rule.full_key == "d.user_bob"
    assert found.rule.limit is not None
    assert found.rule.limit.requests_per_unit == 3


def test_wildcards_are_tried_in_file_order(load: Load) -> None:
    domain = load(
        """
        domain: d
        descriptors:
          - key: path
            value: "/api/*"
            rate_limit: {unit: second, requests_per_unit: 1, name: broad}
          - key: path
            value: "/api/v1/*"
            rate_limit: {unit: second, requests_per_unit: 2, name: specific}
          - key: host
            value: "a*"
            rate_limit: {unit: second, requests_per_unit: 3, name: short_first}
          - key: host
            value: "*"
            rate_limit: {unit: second, requests_per_unit: 4, name: anything}
        """
    )
    # The more specific wildcard comes later, so it never wins.
    assert name_of(domain, [("path", "/api/v1/users")]) == "broad"
    assert name_of(domain, [("path", "/api/v2")]) == "broad"
    assert name_of(domain, [("host", "abc")]) == "short_first"
    assert name_of(domain, [("host", "xyz")]) == "anything"


def test_trailing_star_is_a_prefix_match(load: Load) -> None:
    domain = load(
        """
        domain: d
        descriptors:
          - key: path
            value: "/api.v1*"
            rate_limit: {unit: second, requests_per_unit: 1, name: prefix}
        """
    )
    assert name_of(domain, [("path", "/api.v1")]) == "prefix"
    assert name_of(domain, [("path", "/api.v1/users/42")]) == "prefix"
    # The dot is literal, and the prefix is anchored at the start.
    assert name_of(domain, [("path", "/apixv1/users")]) is None
    assert name_of(domain, [("path", "x/api.v1")]) is None
    assert name_of(domain, [("path", "/api.v")]) is None


def test_star_alone_matches_any_value(load: Load) -> None:
    domain = load(
        """
        domain: d
        descriptors:
          - key: client
            value: "*"
            rate_limit: {unit: second, requests_per_unit: 1, name: any}
        """
    )
    for value in ["a", "some client", "*", "", "/x/y"]:
        assert name_of(domain, [("client", value)]) == "any", value
    assert name_of(domain, [("other", "a")]) is None


def test_star_in_the_middle_matches_any_run_of_characters(load: Load) -> None:
    domain = load(
        """
        domain: d
        descriptors:
          - key: path
            value: "/api/*/users"
            rate_limit: {unit: second, requests_per_unit: 1, name: middle}
          - key: path
            value: "*.png"
            rate_limit: {unit: second, requests_per_unit: 1, name: suffix}
          - key: path
            value: "/a*b*c"
            rate_limit: {unit: second, requests_per_unit: 1, name: two_stars}
        """
    )
    assert name_of(domain, [("path", "/api/v1/users")]) == "middle"
    assert name_of(domain, [("path", "/api/v1/tenants/7/users")]) == "middle"
    # The whole value must match, not just a part of it.
    assert name_of(domain, [("path", "/api/v1/users/42")]) is None
    assert name_of(domain, [("path", "x/api/v1/users")]) is None
    assert name_of(domain, [("path", "/api/v1/groups")]) is None
    assert name_of(domain, [("path", "logo.png")]) == "suffix"
    assert name_of(domain, [("path", "logo.pngx")]) is None
    assert name_of(domain, [("path", "/aXXbYYc")]) == "two_stars"
    assert name_of(domain, [("path", "/aXXcYYb")]) is None


def test_regex_characters_in_a_wildcard_are_literal(load: Load) -> None:
    domain = load(
        """
        domain: d
        descriptors:
          - key: path
            value: "/v1.0/*/(x)"
            rate_limit: {unit: second, requests_per_unit: 1, name: literal}
        """
    )
    assert name_of(domain, [("path", "/v1.0/abc/(x)")]) == "literal"
    assert name_of(domain, [("path", "/v1x0/abc/(x)")]) is None
    assert name_of(domain, [("path", "/v1.0/abc/x")]) is None


NESTED = """
    domain: d
    descriptors:
      - key: tenant
        value: a
        rate_limit: {unit: second, requests_per_unit: 1, name: tenant_a}
        descriptors:
          - key: route
            value: x
            rate_limit: {unit: second, requests_per_unit: 2, name: route_x}
          - key: route
            value: y
            descriptors:
              - key: method
                rate_limit: {unit: second, requests_per_unit: 3, name: method_under_y}
          - key: route
            rate_limit: {unit: second, requests_per_unit: 4, name: route_any}
      - key: tenant
        rate_limit: {unit: second, requests_per_unit: 5, name: tenant_any}
        descriptors:
          - key: route
            value: z
            rate_limit: {unit: second, requests_per_unit: 6, name: any_tenant_route_z}
"""


def test_the_limit_comes_from_the_last_entry_only(load: Load) -> None:
    domain = load(NESTED)
    assert name_of(domain, [("tenant", "a")]) == "tenant_a"
    # Never the tenant node's rule once a deeper entry is given.
    assert name_of(domain, [("tenant", "a"), ("route", "x")]) == "route_x"
    assert name_of(domain, [("tenant", "a"), ("route", "other")]) == "route_any"


def test_an_intermediate_limit_is_ignored(load: Load) -> None:
    domain = load(NESTED)
    # route=y has no rule of its own: the tenant's rule above it does not apply.
    assert name_of(domain, [("tenant", "a"), ("route", "y")]) is None
    assert name_of(domain, [("tenant", "a"), ("route", "y"), ("method", "GET")]) == (
        "method_under_y"
    )


def test_a_request_deeper_than_the_config_gets_no_limit(load: Load) -> None:
    domain = load(NESTED)
    assert name_of(domain, [("tenant", "a"), ("route", "x"), ("method", "GET")]) is None
    assert name_of(domain, [("tenant", "b"), ("route", "z"), ("method", "GET")]) is None


def test_an_unknown_key_at_any_level_gets_no_limit(load: Load) -> None:
    domain = load(NESTED)
    assert name_of(domain, [("user", "a")]) is None
    assert name_of(domain, [("tenant", "a"), ("path", "x")]) is None
    assert name_of(domain, [("tenant", "a"), ("route", "y"), ("verb", "GET")]) is None
    # A known pair after an unknown one does not rescue the request.
    assert name_of(domain, [("user", "a"), ("tenant", "a")]) is None


def test_an_empty_descriptor_gets_no_limit(load: Load) -> None:
    assert match(load(NESTED).root, []) is None


def test_no_backtracking_to_the_key_only_sibling(load: Load) -> None:
    domain = load(NESTED)
    # tenant=a exists but has no route=z child; the key-only tenant node does have one, yet
    # the walk does not go back to try it.
    assert name_of(domain, [("tenant", "a"), ("route", "z")]) == "route_any"
    assert name_of(domain, [("tenant", "b"), ("route", "z")]) == "any_tenant_route_z"

    strict = load(
        """
        domain: d
        descriptors:
          - key: tenant
            value: a
            descriptors:
              - key: route
                value: x
                rate_limit: {unit: second, requests_per_unit: 1, name: a_x}
          - key: tenant
            descriptors:
              - key: route
                value: z
                rate_limit: {unit: second, requests_per_unit: 2, name: any_z}
        """
    )
    assert name_of(strict, [("tenant", "a"), ("route", "z")]) is None
    assert name_of(strict, [("tenant", "b"), ("route", "z")]) == "any_z"


def test_no_backtracking_from_a_wildcard_either(load: Load) -> None:
    domain = load(
        """
        domain: d
        descriptors:
          - key: path
            value: "/api/*"
            descriptors:
              - key: method
                value: GET
                rate_limit: {unit: second, requests_per_unit: 1, name: api_get}
          - key: path
            descriptors:
              - key: method
                value: POST
                rate_limit: {unit: second, requests_per_unit: 2, name: any_post}
        """
    )
    assert name_of(domain, [("path", "/api/x"), ("method", "GET")]) == "api_get"
    assert name_of(domain, [("path", "/api/x"), ("method", "POST")]) is None
    assert name_of(domain, [("path", "/other"), ("method", "POST")]) == "any_post"


def test_a_value_without_limit_or_children_exempts_that_value(load: Load) -> None:
    domain = load(
        """
        domain: d
        descriptors:
          - key: client
            rate_limit: {unit: second, requests_per_unit: 10, name: per_client}
          - key: client
            value: internal
          - key: client
            value: "health*"
        """
    )
    assert name_of(domain, [("client", "someone")]) == "per_client"
    assert name_of(domain, [("client", "internal")]) is None
    assert name_of(domain, [("client", "healthcheck")]) is None


def test_entry_order_matters(load: Load) -> None:
    domain = load(NESTED)
    assert name_of(domain, [("tenant", "a"), ("route", "x")]) == "route_x"
    assert name_of(domain, [("route", "x"), ("tenant", "a")]) is None


def test_share_threshold_reports_the_pattern_at_its_position(load: Load) -> None:
    domain = load(
        """
        domain: d
        descriptors:
          - key: tenant
            descriptors:
              - key: path
                value: "/files/*"
                share_threshold: true
                rate_limit: {unit: second, requests_per_unit: 1, name: shared_files}
              - key: path
                value: "/api/*"
                rate_limit: {unit: second, requests_per_unit: 2, name: per_value_api}
              - key: path
                value: /files/special
                rate_limit: {unit: second, requests_per_unit: 3, name: special}
          - key: path
            value: "*"
            share_threshold: true
            rate_limit: {unit: second, requests_per_unit: 4, name: top_shared}
        """
    )
    shared = match(domain.root, [("tenant", "t1"), ("path", "/files/a.txt")])
    assert shared is not None
    assert shared.rule.name == "shared_files"
    assert shared.shared == (None, "/files/*")

    per_value = match(domain.root, [("tenant", "t1"), ("path", "/api/users")])
    assert per_value is not None
    assert per_value.rule.name == "per_value_api"
    assert per_value.shared is None

    # An exact value is not shared even if it also matches a shared wildcard.
    exact = match(domain.root, [("tenant", "t1"), ("path", "/files/special")])
    assert exact is not None
    assert exact.rule.name == "special"
    assert exact.shared is None

    top = match(domain.root, [("path", "anything")])
    assert top is not None
    assert top.rule.name == "top_shared"
    assert top.shared == ("*",)


def test_share_threshold_on_an_intermediate_wildcard(load: Load) -> None:
    domain = load(
        """
        domain: d
        descriptors:
          - key: path
            value: "/api/*"
            share_threshold: true
            descriptors:
              - key: method
                rate_limit: {unit: second, requests_per_unit: 1, name: api_method}
        """
    )
    found = match(domain.root, [("path", "/api/x"), ("method", "GET")])
    assert found is not None
    assert found.rule.name == "api_method"
    assert found.shared == ("/api/*", None)


def test_lookup_is_correct_with_ten_thousand_values(load: Load) -> None:
    lines = ["domain: big", "descriptors:"]
    for i in range(10_000):
        lines += [
            "  - key: tenant",
            f"    value: t{i}",
            f"    rate_limit: {{unit: minute, requests_per_unit: {i + 1}, name: n{i}}}",
        ]
    lines += [
        "  - key: tenant",
        "    rate_limit: {unit: minute, requests_per_unit: 99999, name: default}",
    ]
    domain = load("\n".join(lines) + "\n")
    assert len(domain.root["tenant"].exact) == 10_000
    for i in [0, 1, 4_999, 9_998, 9_999]:
        found = match(domain.root, [("tenant", f"t{i}")])
        assert found is not None
        assert found.rule.name == f"n{i}"
        assert found.rule.limit is not None
        assert found.rule.limit.requests_per_unit == i + 1
    assert name_of(domain, [("tenant", "t10000")]) == "default"
    assert name_of(domain, [("tenant", "t")]) == "default"
