"""What the reference accepts loads into the expected tree and rules: scalars as written,
file order, full keys and sources, unit lengths, defaults of the command line and of a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ratelimitd.algorithms import DEFAULT_ALGORITHM
from ratelimitd.config.loader import load_config
from ratelimitd.model.rules import Defaults, FailureMode, Source, Unit
from tests.config_files import load_text, rule_at, with_rate_limit, write

# -- domains and descriptors ---------------------------------------------------------------


def test_scalar_values_are_read_as_written(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        domain: 42
        descriptors:
          - key: code
            value: 123
            rate_limit: {unit: second, requests_per_unit: 1}
          - key: ratio
            value: 1.50
            rate_limit: {unit: second, requests_per_unit: 1}
          - key: flag
            value: true
            rate_limit: {unit: second, requests_per_unit: 1}
        """,
    )
    assert list(config.domains) == ["42"]
    root = config.domains["42"].root
    assert set(root["code"].exact) == {"123"}
    assert set(root["ratio"].exact) == {"1.50"}
    assert set(root["flag"].exact) == {"true"}
    assert [rule.full_key for rule in config.rules] == [
        "42.code_123",
        "42.ratio_1.50",
        "42.flag_true",
    ]


def test_same_value_under_different_keys_is_not_a_duplicate(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        domain: d
        descriptors:
          - key: a
            value: x
            rate_limit: {unit: second, requests_per_unit: 1}
          - key: b
            value: x
            rate_limit: {unit: second, requests_per_unit: 2}
        """,
    )
    assert [rule.full_key for rule in config.rules] == ["d.a_x", "d.b_x"]


def test_only_the_first_yaml_document_counts(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        domain: first
        descriptors:
          - key: a
            rate_limit: {unit: second, requests_per_unit: 1}
        ---
        domain: second
        nonsense: [unclosed
        """,
    )
    assert list(config.domains) == ["first"]
    assert [rule.full_key for rule in config.rules] == ["first.a"]


def test_rules_in_file_order_with_full_keys_and_sources(tmp_path: Path) -> None:
    text = """
        domain: api
        descriptors:
          - key: tenant
            value: acme
            rate_limit: {unit: minute, requests_per_unit: 10, name: acme}
            descriptors:
              - key: route
                value: /search
                descriptors:
                  - key: method
                    rate_limit: {unit: second, requests_per_unit: 2}
              - key: route
                rate_limit: {unit: hour, requests_per_unit: 100}
          - key: tenant
            rate_limit: {unit: day, requests_per_unit: 1000}
    """
    config = load_text(tmp_path, text)
    path = str(tmp_path / "config.yaml")
    assert [(rule.domain, rule.full_key, rule.source) for rule in config.rules] == [
        # The source of a rule is its descriptor's line.
        ("api", "api.tenant_acme", Source(path, 3)),
        ("api", "api.tenant_acme.route_/search.method", Source(path, 10)),
        ("api", "api.tenant_acme.route", Source(path, 12)),
        ("api", "api.tenant", Source(path, 14)),
    ]
    limits = [rule.limit for rule in config.rules]
    assert [(lim.requests_per_unit, lim.unit) for lim in limits if lim is not None] == [
        (10, Unit.MINUTE),
        (2, Unit.SECOND),
        (100, Unit.HOUR),
        (1000, Unit.DAY),
    ]
    domain = config.domains["api"]
    assert domain.source == Source(path, 1)
    acme = domain.root["tenant"].exact["acme"]
    assert acme.source == Source(path, 3)
    assert acme.rule is config.rules[0]
    assert config.files == (path,)


def test_rules_of_several_files_keep_file_order(tmp_path: Path) -> None:
    second = write(
        tmp_path, "z.yaml", "domain: z\ndescriptors: [{key: k, rate_limit: {unit: second}}]\n"
    )
    first = write(
        tmp_path, "a.yaml", "domain: a\ndescriptors: [{key: k, rate_limit: {unit: second}}]\n"
    )
    config = load_config([second, first])
    assert [rule.full_key for rule in config.rules] == ["z.k", "a.k"]
    assert config.files == (str(second), str(first))


def test_null_values_count_as_absent_like_the_reference(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        domain: nulls
        descriptors:
          - key: a
            value: ~
            shadow_mode: ~
            rate_limit: {unit: minute, requests_per_unit: ~}
          - key: b
            rate_limit: ~
        """,
    )
    rule = rule_at(config, "nulls.a")
    assert rule.limit is not None
    assert rule.limit.requests_per_unit == 0
    assert rule.shadow_mode is False
    assert [r.full_key for r in config.rules] == ["nulls.a"]


# -- rate_limit fields ---------------------------------------------------------------------


def test_unlimited_with_empty_unit_is_accepted_like_the_reference(tmp_path: Path) -> None:
    config = load_text(tmp_path, with_rate_limit("{unlimited: true, unit: ''}"))
    assert config.rules[0].unlimited


def test_unlimited_without_unit(tmp_path: Path) -> None:
    config = load_text(tmp_path, with_rate_limit("{unlimited: true, name: free}"))
    (rule,) = config.rules
    assert rule.unlimited
    assert rule.limit is None
    assert rule.name == "free"


@pytest.mark.parametrize(
    ("written", "unit"),
    [("MINUTE", Unit.MINUTE), ("Hour", Unit.HOUR), ("second", Unit.SECOND), ("WeeK", Unit.WEEK)],
)
def test_units_are_case_insensitive(tmp_path: Path, written: str, unit: Unit) -> None:
    config = load_text(tmp_path, with_rate_limit(f"{{unit: {written}, requests_per_unit: 3}}"))
    limit = config.rules[0].limit
    assert limit is not None
    assert limit.unit is unit


def test_every_unit_has_the_reference_length(tmp_path: Path) -> None:
    expected = {
        "second": 1,
        "minute": 60,
        "hour": 3600,
        "day": 86400,
        "week": 604800,
        "month": 2592000,
        "year": 31536000,
    }
    lines = ["domain: d", "descriptors:"]
    for name in expected:
        lines += [f"  - key: {name}", f"    rate_limit: {{unit: {name}, requests_per_unit: 1}}"]
    config = load_text(tmp_path, "\n".join(lines) + "\n")
    seconds = {}
    for rule in config.rules:
        assert rule.limit is not None
        seconds[rule.full_key.removeprefix("d.")] = rule.limit.unit.seconds
    assert seconds == expected


def test_replaces_and_name_are_loaded(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        domain: d
        descriptors:
          - key: a
            rate_limit:
              unit: second
              name: mine
              replaces: [{name: x}, {name: y}]
        """,
    )
    rule = config.rules[0]
    assert rule.name == "mine"
    assert rule.replaces == frozenset({"x", "y"})


def test_requests_per_unit_bounds_are_inclusive(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        domain: d
        descriptors:
          - key: zero
            rate_limit: {unit: second, requests_per_unit: 0}
          - key: max
            rate_limit: {unit: second, requests_per_unit: 4294967295}
          - key: missing
            rate_limit: {unit: second}
        """,
    )
    per_unit = {}
    for rule in config.rules:
        assert rule.limit is not None
        per_unit[rule.full_key] = rule.limit.requests_per_unit
    assert per_unit == {"d.zero": 0, "d.max": 4294967295, "d.missing": 0}


def test_burst_defaults_to_requests_per_unit_and_can_be_set(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        domain: d
        descriptors:
          - key: plain
            rate_limit: {unit: minute, requests_per_unit: 7}
          - key: bursty
            rate_limit: {unit: minute, requests_per_unit: 7, burst: 20}
        """,
    )
    plain = rule_at(config, "d.plain").limit
    bursty = rule_at(config, "d.bursty").limit
    assert plain is not None
    assert bursty is not None
    assert (plain.requests_per_unit, plain.burst) == (7, 7)
    assert (bursty.requests_per_unit, bursty.burst) == (7, 20)


def test_algorithm_and_failure_mode_defaults(tmp_path: Path) -> None:
    text = """
        domain: d
        descriptors:
          - key: plain
            rate_limit: {unit: second, requests_per_unit: 1}
          - key: strict
            rate_limit: {unit: second, requests_per_unit: 1, failure_mode: deny}
          - key: lenient
            rate_limit: {unit: second, requests_per_unit: 1, failure_mode: allow}
          - key: explicit
            rate_limit: {unit: second, requests_per_unit: 1, algorithm: token_bucket}
    """
    config = load_text(tmp_path, text)
    plain = rule_at(config, "d.plain")
    assert plain.limit is not None
    assert plain.limit.algorithm == DEFAULT_ALGORITHM == "token_bucket"
    assert plain.failure_mode is FailureMode.ALLOW
    assert rule_at(config, "d.strict").failure_mode is FailureMode.DENY
    assert rule_at(config, "d.lenient").failure_mode is FailureMode.ALLOW
    explicit = rule_at(config, "d.explicit").limit
    assert explicit is not None
    assert explicit.algorithm == "token_bucket"

    denying = load_text(tmp_path, text, Defaults(failure_mode=FailureMode.DENY))
    assert rule_at(denying, "d.plain").failure_mode is FailureMode.DENY
    assert rule_at(denying, "d.strict").failure_mode is FailureMode.DENY
    # An explicit value in the file wins over the default.
    assert rule_at(denying, "d.lenient").failure_mode is FailureMode.ALLOW


def test_flags_are_loaded(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        domain: d
        descriptors:
          - key: shadow
            shadow_mode: true
            rate_limit: {unit: second}
          - key: detailed
            detailed_metric: true
            rate_limit: {unit: second}
          - key: plain
            shadow_mode: false
            rate_limit: {unit: second}
        """,
    )
    shadow, detailed, plain = config.rules
    assert (shadow.shadow_mode, shadow.detailed_metric) == (True, False)
    assert (detailed.shadow_mode, detailed.detailed_metric) == (False, True)
    assert (plain.shadow_mode, plain.detailed_metric) == (False, False)


# -- defaults ------------------------------------------------------------------------------


def test_file_defaults_apply_to_rules_that_name_none(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        domain: d
        defaults:
          algorithm: sliding_window
          failure_mode: deny
        descriptors:
          - key: a
            rate_limit: {unit: second, requests_per_unit: 1}
          - key: b
            rate_limit: {unit: second, requests_per_unit: 1, algorithm: gcra, failure_mode: allow}
        """,
        Defaults(algorithm="fixed_window"),
    )
    a, b = rule_at(config, "d.a"), rule_at(config, "d.b")
    assert a.limit is not None
    assert b.limit is not None
    assert (a.limit.algorithm, a.failure_mode) == ("sliding_window", FailureMode.DENY)
    assert (b.limit.algorithm, b.failure_mode) == ("gcra", FailureMode.ALLOW)
    assert config.domains["d"].defaults == Defaults("sliding_window", FailureMode.DENY)


def test_command_line_default_algorithm_applies_without_file_defaults(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        "domain: d\ndescriptors: [{key: a, rate_limit: {unit: second}}]\n",
        Defaults(algorithm="gcra"),
    )
    limit = rule_at(config, "d.a").limit
    assert limit is not None
    assert limit.algorithm == "gcra"
