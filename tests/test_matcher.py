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

WILDCARDS_IN_FILE_ORDER = """
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

TRAILING_STAR = """
    domain: d
    descriptors:
      - key: path
        value: "/api.v1*"
        rate_limit: {unit: second, requests_per_unit: 1, name: prefix}
"""

STAR_ALONE = """
    domain: d
    descriptors:
      - key: client
        value: "*"
        rate_limit: {unit: second, requests_per_unit: 1, name: any}
"""

STARS_INSIDE = """
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

REGEX_CHARACTERS = """
    domain: d
    descriptors:
      - key: path
        value: "/v1.0/*/(x)"
        rate_limit: {unit: second, requests_per_unit: 1, name: literal}
"""

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

KEY_ONLY_SIBLING = """
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

WILDCARD_AND_KEY_ONLY = """
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

EXEMPT_VALUES = """
    domain: d
    descriptors:
      - key: client
        rate_limit: {unit: second, requests_per_unit: 10, name: per_client}
      - key: client
        value: internal
      - key: client
        value: "health*"
"""

# Config, descriptor entries, and the name of the rule they reach (None: no limit).
MATCHES = [
    # exact value, then wildcards, then the key-only node
    pytest.param(PRECEDENCE, [("user", "bob")], "exact", id="exact-beats-wildcard"),
    pytest.param(PRECEDENCE, [("user", "bobby")], "wildcard", id="wildcard-beats-key-only"),
    pytest.param(PRECEDENCE, [("user", "bo")], "wildcard", id="wildcard-star-matches-nothing"),
    pytest.param(PRECEDENCE, [("user", "alice")], "key_only", id="key-only-last"),
    # wildcards are tried in file order: the more specific one comes later, so it never wins
    pytest.param(
        WILDCARDS_IN_FILE_ORDER,
        [("path", "/api/v1/users")],
        "broad",
        id="file-order-earlier-broad-wildcard-wins",
    ),
    pytest.param(WILDCARDS_IN_FILE_ORDER, [("path", "/api/v2")], "broad", id="file-order-broad"),
    pytest.param(
        WILDCARDS_IN_FILE_ORDER, [("host", "abc")], "short_first", id="file-order-first-match"
    ),
    pytest.param(
        WILDCARDS_IN_FILE_ORDER, [("host", "xyz")], "anything", id="file-order-later-match"
    ),
    # a trailing star is a prefix match; the dot is literal, and the prefix anchored at the start
    pytest.param(TRAILING_STAR, [("path", "/api.v1")], "prefix", id="prefix-alone"),
    pytest.param(TRAILING_STAR, [("path", "/api.v1/users/42")], "prefix", id="prefix-and-rest"),
    pytest.param(TRAILING_STAR, [("path", "/apixv1/users")], None, id="prefix-dot-is-literal"),
    pytest.param(TRAILING_STAR, [("path", "x/api.v1")], None, id="prefix-anchored-at-start"),
    pytest.param(TRAILING_STAR, [("path", "/api.v")], None, id="prefix-too-short"),
    # a star alone matches any value of its key
    *[
        pytest.param(STAR_ALONE, [("client", value)], "any", id=f"star-alone-matches-{what}")
        for value, what in [
            ("a", "a-letter"),
            ("some client", "spaces"),
            ("*", "a-star"),
            ("", "empty"),
            ("/x/y", "slashes"),
        ]
    ],
    pytest.param(STAR_ALONE, [("other", "a")], None, id="star-alone-not-another-key"),
    # a star inside a value matches any run of characters; the whole value must match
    pytest.param(STARS_INSIDE, [("path", "/api/v1/users")], "middle", id="middle-star"),
    pytest.param(
        STARS_INSIDE, [("path", "/api/v1/tenants/7/users")], "middle", id="middle-star-slashes"
    ),
    pytest.param(STARS_INSIDE, [("path", "/api/v1/users/42")], None, id="middle-star-whole-value"),
    pytest.param(STARS_INSIDE, [("path", "x/api/v1/users")], None, id="middle-star-anchored"),
    pytest.param(STARS_INSIDE, [("path", "/api/v1/groups")], None, id="middle-star-other-end"),
    pytest.param(STARS_INSIDE, [("path", "logo.png")], "suffix", id="leading-star"),
    pytest.param(STARS_INSIDE, [("path", "logo.pngx")], None, id="leading-star-anchored-at-end"),
    pytest.param(STARS_INSIDE, [("path", "/aXXbYYc")], "two_stars", id="two-stars"),
    pytest.param(STARS_INSIDE, [("path", "/aXXcYYb")], None, id="two-stars-in-order"),
    # regex characters in a wildcard are literal
    pytest.param(REGEX_CHARACTERS, [("path", "/v1.0/abc/(x)")], "literal", id="regex-literal"),
    pytest.param(REGEX_CHARACTERS, [("path", "/v1x0/abc/(x)")], None, id="regex-dot-literal"),
    pytest.param(REGEX_CHARACTERS, [("path", "/v1.0/abc/x")], None, id="regex-parens-literal"),
    # the limit comes from the node the last entry reaches, never the tenant's above it
    pytest.param(NESTED, [("tenant", "a")], "tenant_a", id="last-entry-one"),
    pytest.param(NESTED, [("tenant", "a"), ("route", "x")], "route_x", id="last-entry-exact"),
    pytest.param(
        NESTED, [("tenant", "a"), ("route", "other")], "route_any", id="last-entry-key-only"
    ),
    # route=y has no rule of its own: the tenant's rule above it does not apply
    pytest.param(NESTED, [("tenant", "a"), ("route", "y")], None, id="intermediate-limit-ignored"),
    pytest.param(
        NESTED,
        [("tenant", "a"), ("route", "y"), ("method", "GET")],
        "method_under_y",
        id="below-an-intermediate-node",
    ),
    # a request deeper than the config gets no limit
    pytest.param(
        NESTED, [("tenant", "a"), ("route", "x"), ("method", "GET")], None, id="deeper-exact"
    ),
    pytest.param(
        NESTED, [("tenant", "b"), ("route", "z"), ("method", "GET")], None, id="deeper-key-only"
    ),
    # an unknown key at any level gets no limit
    pytest.param(NESTED, [("user", "a")], None, id="unknown-key-first"),
    pytest.param(NESTED, [("tenant", "a"), ("path", "x")], None, id="unknown-key-second"),
    pytest.param(
        NESTED, [("tenant", "a"), ("route", "y"), ("verb", "GET")], None, id="unknown-key-third"
    ),
    # a known pair after an unknown one does not rescue the request
    pytest.param(NESTED, [("user", "a"), ("tenant", "a")], None, id="unknown-key-then-known"),
    pytest.param(NESTED, [], None, id="empty-descriptor"),
    # tenant=a exists but has no route=z child; the key-only tenant node does have one, yet
    # the walk does not go back to try it
    pytest.param(
        NESTED, [("tenant", "a"), ("route", "z")], "route_any", id="no-backtracking-nested"
    ),
    pytest.param(
        NESTED,
        [("tenant", "b"), ("route", "z")],
        "any_tenant_route_z",
        id="key-only-child-for-others",
    ),
    pytest.param(
        KEY_ONLY_SIBLING, [("tenant", "a"), ("route", "z")], None, id="no-backtracking-to-sibling"
    ),
    pytest.param(
        KEY_ONLY_SIBLING, [("tenant", "b"), ("route", "z")], "any_z", id="key-only-sibling-others"
    ),
    pytest.param(
        WILDCARD_AND_KEY_ONLY,
        [("path", "/api/x"), ("method", "GET")],
        "api_get",
        id="below-a-wildcard",
    ),
    pytest.param(
        WILDCARD_AND_KEY_ONLY,
        [("path", "/api/x"), ("method", "POST")],
        None,
        id="no-backtracking-from-a-wildcard",
    ),
    pytest.param(
        WILDCARD_AND_KEY_ONLY,
        [("path", "/other"), ("method", "POST")],
        "any_post",
        id="key-only-beside-a-wildcard",
    ),
    # a value without limit or children exempts that value
    pytest.param(EXEMPT_VALUES, [("client", "someone")], "per_client", id="exempt-others-limited"),
    pytest.param(EXEMPT_VALUES, [("client", "internal")], None, id="exempt-exact-value"),
    pytest.param(EXEMPT_VALUES, [("client", "healthcheck")], None, id="exempt-wildcard-value"),
    # entry order matters (in config order, see last-entry-exact)
    pytest.param(NESTED, [("route", "x"), ("tenant", "a")], None, id="entry-order-swapped"),
]


@pytest.mark.parametrize(("config", "entries", "expected"), MATCHES)
def test_entries_reach_the_rule(
    load: Load, config: str, entries: Entries, expected: str | None
) -> None:
    assert name_of(load(config), entries) == expected


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
