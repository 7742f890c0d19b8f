"""The config loader: every error names its file, its 1-based line and what is wrong; what the
reference accepts loads into the expected rules; directories are discovered as documented; and
`ratelimitd check` prints one `file:line: message` per error."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from ratelimitd.algorithms import DEFAULT_ALGORITHM
from ratelimitd.cli import main
from ratelimitd.config.errors import ConfigError, InvalidConfigError
from ratelimitd.config.loader import check_paths, load_config
from ratelimitd.model.rules import Config, Defaults, FailureMode, Rule, Source, Unit

# -- helpers -------------------------------------------------------------------------------


def write(directory: Path, name: str, text: str) -> Path:
    """Write dedented YAML (line 1 is the first non-empty line of `text`) and return the path."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def line_of(text: str, marker: str) -> int:
    """The 1-based line of the only line of dedented `text` that contains `marker`."""
    lines = textwrap.dedent(text).lstrip("\n").splitlines()
    hits = [number for number, line in enumerate(lines, start=1) if marker in line]
    assert len(hits) == 1, f"marker {marker!r} must occur on exactly one line, found {hits}"
    return hits[0]


def errors_in(tmp_path: Path, text: str, name: str = "config.yaml") -> list[ConfigError]:
    """The errors of one file, checking that load_config and check_paths agree."""
    path = write(tmp_path, name, text)
    errors = check_paths([path])
    with pytest.raises(InvalidConfigError) as raised:
        load_config([path])
    assert list(raised.value.errors) == errors
    return errors


def only_error(tmp_path: Path, text: str, name: str = "config.yaml") -> ConfigError:
    """The single error of one file (fails if there are none or several)."""
    errors = errors_in(tmp_path, text, name)
    assert len(errors) == 1, errors
    return errors[0]


def assert_error(error: ConfigError, path: Path, line: int | None, *fragments: str) -> None:
    assert error.file == str(path)
    assert error.line == line
    for fragment in fragments:
        assert fragment in error.message, f"{fragment!r} not in {error.message!r}"


def load_text(tmp_path: Path, text: str, defaults: Defaults | None = None) -> Config:
    path = write(tmp_path, "config.yaml", text)
    return load_config([path]) if defaults is None else load_config([path], defaults)


def rule_at(config: Config, full_key: str) -> Rule:
    matches = [rule for rule in config.rules if rule.full_key == full_key]
    assert len(matches) == 1, [rule.full_key for rule in config.rules]
    return matches[0]


def with_rate_limit(rate_limit: str) -> str:
    """A one-descriptor file whose rate_limit (on line 4) is the given flow mapping."""
    return f"domain: d\ndescriptors:\n  - key: k\n    rate_limit: {rate_limit}\n"


# -- one error per file --------------------------------------------------------------------

# A file, where its one error is (a line number, None for the whole file, or a marker text on
# that line), and fragments its message holds.
ONE_ERROR = [
    # domain
    pytest.param(
        """
        descriptors:
          - key: a
            rate_limit: {unit: second, requests_per_unit: 1}
        domain: ""
        """,
        4,
        ("'domain'", "must not be empty"),
        id="domain-empty",
    ),
    pytest.param(
        """
        # a comment and a blank line first, so the mapping starts on line 3

        descriptors:
          - key: a
            rate_limit: {unit: second, requests_per_unit: 1}
        """,
        3,
        ("missing 'domain'",),
        id="domain-missing-points-at-the-top-mapping",
    ),
    pytest.param("domain: [a]\n", 1, ("'domain' must be a string",), id="domain-not-a-string"),
    # duplicate siblings
    pytest.param(
        """
        domain: d
        descriptors:
          - key: route
            value: /a
            rate_limit: {unit: second, requests_per_unit: 1}
          - key: route
            value: /b
          - key: route   # second /a
            value: /a
            rate_limit: {unit: second, requests_per_unit: 2}
        """,
        "second /a",
        ("duplicate", "route=/a", "3", "first at line 3"),
        id="duplicate-sibling-key-value",
    ),
    pytest.param(
        """
        domain: d
        descriptors:
          - key: user
            value: bob
            rate_limit: {unit: second, requests_per_unit: 10}
          - key: user   # per hour
            value: bob
            rate_limit: {unit: hour, requests_per_unit: 100}
        """,
        "per hour",
        ("duplicate", "user=bob"),
        id="duplicate-sibling-with-different-units-is-still-a-duplicate",
    ),
    pytest.param(
        """
        domain: d
        descriptors:
          - key: tenant
            rate_limit: {unit: second, requests_per_unit: 1}
          - key: tenant
            value: vip
          - key: tenant   # again
        """,
        "again",
        ("duplicate descriptor tenant", "first at line 3"),
        id="duplicate-key-only-siblings",
    ),
    pytest.param(
        """
        domain: d
        descriptors:
          - key: tenant
            descriptors:
              - key: route
                value: /x
              - key: route   # dup
                value: /x
          - key: other
            descriptors:
              - key: route
                value: /x
        """,
        "dup",
        ("route=/x",),
        id="duplicate-siblings-in-a-nested-level",
    ),
    pytest.param(
        """
        domain: d
        descriptors:
          - key: a
            rate_limit:
              unit: second
              requests_per_unit: 1
              requests_per_unit: 2
        """,
        7,
        ("duplicate key 'requests_per_unit'", "first at line 6"),
        id="duplicate-yaml-mapping-key",
    ),
    # unknown keys
    pytest.param(
        """
        domain: d
        discriptors:
          - key: a
        """,
        2,
        ("unknown key 'discriptors'", "top level", "did you mean 'descriptors'?"),
        id="unknown-top-level-key-suggests",
    ),
    pytest.param(
        """
        domain: d
        descriptors:
          - key: a
            rate_limit:
              unit: second
              requests_per_units: 5
        """,
        6,
        ("unknown key 'requests_per_units'", "rate_limit", "did you mean 'requests_per_unit'?"),
        id="unknown-rate-limit-key-suggests",
    ),
    pytest.param(
        "domain: d\ndefaults:\n  algoritm: gcra\n",
        3,
        ("unknown key 'algoritm'", "'algorithm'"),
        id="unknown-defaults-key-suggests",
    ),
    # units
    pytest.param(
        with_rate_limit("{unit: minutes, requests_per_unit: 1}"),
        4,
        ("unknown unit 'minutes'", "did you mean 'minute'?"),
        id="unit-unknown-suggests",
    ),
    pytest.param(
        """
        domain: d
        descriptors:
          - key: a
            rate_limit:
              requests_per_unit: 5
        """,
        5,
        ("needs a 'unit'",),
        id="unit-missing-without-unlimited",
    ),
    pytest.param(
        """
        domain: d
        descriptors:
          - key: a
            rate_limit:
              unlimited: true
              unit: minute
        """,
        6,
        ("unlimited", "unit"),
        id="unit-with-unlimited",
    ),
    # replaces
    pytest.param(
        """
        domain: d
        descriptors:
          - key: a
            rate_limit:
              unit: second
              name: mine
              replaces:
                - name: ""
        """,
        8,
        ("replaces", "non-empty 'name'"),
        id="replaces-empty-name",
    ),
    pytest.param(
        """
        domain: d
        descriptors:
          - key: a
            rate_limit:
              unit: second
              replaces:
                - {}
        """,
        7,
        ("replaces", "non-empty 'name'"),
        id="replaces-entry-without-name",
    ),
    pytest.param(
        """
        domain: d
        descriptors:
          - key: a
            rate_limit:
              unit: second
              name: mine
              replaces:
                - name: other
                - name: mine
        """,
        9,
        ("'mine'", "cannot replace itself"),
        id="replaces-itself",
    ),
    # numbers
    *[
        pytest.param(
            f"""
            domain: d
            descriptors:
              - key: a
                rate_limit:
                  unit: second
                  requests_per_unit: {written}
            """,
            6,
            ("'requests_per_unit'", fragment),
            id=f"requests-per-unit-{what}",
        )
        for written, fragment, what in [
            ("-1", "between 0 and 4294967295, got -1", "negative"),
            ("4294967296", "between 0 and 4294967295, got 4294967296", "over-uint32"),
            ("1.5", "whole number, got '1.5'", "fraction"),
            ("ten", "whole number, got 'ten'", "word"),
            ('"10"', "whole number", "quoted-number"),
        ]
    ],
    # burst
    pytest.param(
        with_rate_limit("{unit: second, requests_per_unit: 5, burst: 0}"),
        4,
        ("'burst'", "between 1 and"),
        id="burst-zero",
    ),
    pytest.param(
        with_rate_limit("{unit: second, requests_per_unit: 0, burst: 5}"),
        4,
        ("burst needs", "requests_per_unit > 0"),
        id="burst-with-zero-requests-per-unit",
    ),
    pytest.param(
        with_rate_limit("{unit: second, burst: 5}"),
        4,
        ("burst needs", "requests_per_unit > 0"),
        id="burst-without-requests-per-unit",
    ),
    pytest.param(
        with_rate_limit("{unlimited: true, burst: 5}"), 4, ("burst needs",), id="burst-unlimited"
    ),
    *[
        pytest.param(
            f"""
            domain: d
            descriptors:
              - key: a
                rate_limit:
                  unit: minute
                  requests_per_unit: 10
                  algorithm: {algorithm}
                  burst: 20
            """,
            8,
            (f"burst does not apply to {algorithm}",),
            id=f"burst-not-for-{algorithm}",
        )
        for algorithm in ["fixed_window", "sliding_window"]
    ],
    pytest.param(
        """
        domain: d
        descriptors:
          - key: a
            rate_limit: {unit: year, requests_per_unit: 1, burst: 11}
        """,
        4,
        ("burst 11", "10 years"),
        id="burst-that-takes-a-decade-to-refill",
    ),
    # extensions: algorithm, failure_mode
    pytest.param(
        with_rate_limit("{unit: second, algorithm: token_buckets}"),
        4,
        ("unknown algorithm 'token_buckets'", "did you mean 'token_bucket'?"),
        id="algorithm-unknown-suggests",
    ),
    pytest.param(
        """
        domain: d
        descriptors:
          - key: a
            rate_limit:
              unit: second
              failure_mode: denny
        """,
        6,
        ("unknown failure_mode 'denny'", "allow", "did you mean 'deny'?"),
        id="failure-mode-unknown-suggests",
    ),
    # flags
    *[
        pytest.param(
            f"""
            domain: d
            descriptors:
              - key: a
                shadow_mode: {written}
                rate_limit: {{unit: second}}
            """,
            4,
            ("'shadow_mode'", "true or false"),
            id=f"shadow-mode-{what}",
        )
        for written, what in [
            ("'true'", "quoted-true"),
            ("1", "number"),
            ("maybe", "word"),
            ("[true]", "list"),
        ]
    ],
    pytest.param(
        with_rate_limit("{unit: second}") + "    value_to_metric: 5\n",
        5,
        ("'value_to_metric'", "true or false"),
        id="value-to-metric-not-a-boolean",
    ),
    pytest.param(
        with_rate_limit("{unit: second}") + "    detailed_metric: true\n    value_to_metric: 5\n",
        6,
        ("'value_to_metric'", "true or false"),
        id="value-to-metric-not-a-boolean-next-to-detailed-metric",
    ),
    # structure
    pytest.param(
        """
        domain: d
        descriptors:
          key: a
          value: b
        """,
        3,
        ("'descriptors' must be a list",),
        id="descriptors-not-a-list",
    ),
    pytest.param(
        """
        domain: d
        descriptors:
          - key: a
            descriptors: nope
        """,
        4,
        ("'descriptors' must be a list",),
        id="nested-descriptors-not-a-list",
    ),
    pytest.param(
        with_rate_limit("[second, 5]"), 4, ("rate_limit must be a mapping",), id="rate-limit-list"
    ),
    pytest.param("- domain: d\n", 1, ("top level must be a mapping",), id="top-level-a-list"),
    *[
        pytest.param(
            f"""
            domain: d
            descriptors:
              - key: a
                {key}: x
            """,
            4,
            ("keys in a descriptor must be strings",),
            id=f"mapping-key-{what}",
        )
        for key, what in [("1", "number"), ("true", "boolean"), ("~", "null"), ("[a]", "list")]
    ],
    # YAML syntax, and files with nothing in them
    pytest.param(
        "domain: d\ndescriptors:\n  - key: a: b\n",
        3,
        ("YAML syntax error", "mapping values are not allowed"),
        id="yaml-mapping-in-scalar",
    ),
    pytest.param(
        "domain: d\ndescriptors:\n  - key: a\n   value: b\n",
        4,
        ("YAML syntax error", "expected '-'"),
        id="yaml-bad-indent",
    ),
    pytest.param(
        "domain: d\ndescriptors:\n\t- key: a\n",
        3,
        ("YAML syntax error", "cannot start any token"),
        id="yaml-tab",
    ),
    pytest.param(
        "domain: d\n\ndescriptors: [{key: a}\n",
        4,
        ("YAML syntax error", "expected ',' or ']'"),
        id="yaml-unclosed-flow",
    ),
    *[
        pytest.param(text, None, ("empty file",), id=f"empty-file-{what}")
        for text, what in [
            ("", "no-bytes"),
            ("\n\n", "blank-lines"),
            ("# only a comment\n", "comment"),
        ]
    ],
    # `---` alone is a document holding a null scalar: reported like an empty file.
    pytest.param("---\n", None, ("empty file",), id="empty-document"),
]


@pytest.mark.parametrize(("text", "line", "fragments"), ONE_ERROR)
def test_one_error(
    tmp_path: Path, text: str, line: int | str | None, fragments: tuple[str, ...]
) -> None:
    if isinstance(line, str):
        line = line_of(text, line)
    error = only_error(tmp_path, text)
    assert_error(error, tmp_path / "config.yaml", line, *fragments)


# A file, and the line and message fragments of each of its errors, in order.
SEVERAL_ERRORS = [
    pytest.param(
        """
        domain: d
        descriptors:
          - key: a
            valeu: x
          - key: b
            discriptors: []
        """,
        [
            (4, ("unknown key 'valeu'", "descriptor", "did you mean 'value'?")),
            (6, ("unknown key 'discriptors'", "did you mean 'descriptors'?")),
        ],
        id="unknown-descriptor-keys-suggest",
    ),
    pytest.param(
        """
        domain: d
        descriptors:
          - key: path
            value: /exact
            share_threshold: true
            rate_limit: {unit: second}
          - key: other
            share_threshold: true
          - key: path
            value: /api/*
            share_threshold: true
            rate_limit: {unit: second}
        """,
        [(5, ("share_threshold", "wildcard")), (8, ("share_threshold", "wildcard"))],
        id="share-threshold-needs-a-wildcard",
    ),
    pytest.param(
        """
        domain: d
        descriptors:
          - key: a
          - just_a_string
          - [a, list]
        """,
        [(4, ("descriptor must be a mapping",)), (5, ("descriptor must be a mapping",))],
        id="descriptors-not-mappings",
    ),
    pytest.param(
        """
        domain: d
        descriptors:
          - key: ""
          - value: x
        """,
        [(3, ("non-empty 'key'",)), (4, ("non-empty 'key'",))],
        id="descriptor-keys-empty-or-missing",
    ),
]


@pytest.mark.parametrize(("text", "expected"), SEVERAL_ERRORS)
def test_several_errors(
    tmp_path: Path, text: str, expected: list[tuple[int, tuple[str, ...]]]
) -> None:
    errors = errors_in(tmp_path, text)
    assert len(errors) == len(expected), errors
    for error, (line, fragments) in zip(errors, expected, strict=True):
        assert_error(error, tmp_path / "config.yaml", line, *fragments)


# -- domain --------------------------------------------------------------------------------


def test_duplicate_domain_across_files_names_the_first(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", "domain: shared\ndescriptors: []\n")
    second = write(tmp_path, "b.yaml", "# other\n\ndomain: shared\n")
    errors = check_paths([first, second])
    assert len(errors) == 1, errors
    assert_error(errors[0], second, 3, "duplicate domain 'shared'", f"{first}:1")
    with pytest.raises(InvalidConfigError) as raised:
        load_config([first, second])
    assert raised.value.errors == (errors[0],)


def test_duplicate_domain_in_a_directory_points_at_the_later_file(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", "domain: shared\n")
    write(tmp_path, "a.yaml", "# a\ndomain: shared\n")
    errors = check_paths([tmp_path])
    assert len(errors) == 1, errors
    assert_error(errors[0], tmp_path / "b.yaml", 1, "duplicate domain", f"{tmp_path / 'a.yaml'}:2")


# -- duplicate siblings --------------------------------------------------------------------


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


# -- unknown keys --------------------------------------------------------------------------


def test_unknown_replaces_key_suggests(tmp_path: Path) -> None:
    text = """
        domain: d
        descriptors:
          - key: a
            rate_limit:
              unit: second
              replaces:
                - nmae: other
    """
    errors = errors_in(tmp_path, text)
    path = tmp_path / "config.yaml"
    assert errors, "an unknown key in a replaces entry must be an error"
    assert_error(errors[0], path, 7, "unknown key 'nmae'", "replaces entry", "did you mean 'name'?")


def test_unknown_key_without_close_match_has_no_suggestion(tmp_path: Path) -> None:
    error = only_error(tmp_path, "domain: d\nzzzzzz: 1\n")
    assert_error(error, tmp_path / "config.yaml", 2, "unknown key 'zzzzzz'")
    assert "did you mean" not in error.message


# -- units ---------------------------------------------------------------------------------


def test_unlimited_with_empty_unit_is_accepted_like_the_reference(tmp_path: Path) -> None:
    config = load_text(tmp_path, with_rate_limit("{unlimited: true, unit: ''}"))
    assert config.rules[0].unlimited


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


# -- replaces ------------------------------------------------------------------------------


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


# -- numbers -------------------------------------------------------------------------------


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


# -- extensions: algorithm, failure_mode ---------------------------------------------------


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


# -- flags ---------------------------------------------------------------------------------


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


# -- structure -----------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    errors = check_paths([missing])
    assert len(errors) == 1, errors
    assert_error(errors[0], missing, None, "no such file or directory")
    with pytest.raises(InvalidConfigError, match="no such file"):
        load_config([missing])


def test_empty_directory(tmp_path: Path) -> None:
    write(tmp_path, "README.txt", "not yaml")
    with pytest.raises(InvalidConfigError) as raised:
        load_config([tmp_path])
    assert raised.value.errors == (ConfigError(str(tmp_path), None, "no config files"),)


def test_several_errors_in_one_file_are_all_reported(tmp_path: Path) -> None:
    text = """
        domain: d
        descriptors:
          - key: a
            rate_limit:
              unit: minutes
              requests_per_unit: -5
          - key: b
            valeu: x
            rate_limit: {unit: second, burst: 0}
          - key: a
          - key: c
            shadow_mode: perhaps
            rate_limit: {unlimited: true, unit: hour}
    """
    path = tmp_path / "config.yaml"
    errors = errors_in(tmp_path, text)
    assert [(error.file, error.line) for error in errors] == [
        (str(path), 5),
        (str(path), 6),
        (str(path), 8),
        (str(path), 9),
        (str(path), 10),
        (str(path), 12),
        (str(path), 13),
    ]
    messages = [error.message for error in errors]
    assert "unknown unit 'minutes'" in messages[0]
    assert "requests_per_unit" in messages[1]
    assert "unknown key 'valeu'" in messages[2]
    assert "burst" in messages[3]
    assert "duplicate descriptor a" in messages[4]
    assert "shadow_mode" in messages[5]
    assert "unlimited" in messages[6]


def test_errors_of_several_files_are_reported_together(tmp_path: Path) -> None:
    bad_one = write(tmp_path, "one.yaml", "domain: one\nbogus: 1\n")
    good = write(tmp_path, "two.yaml", "domain: two\n")
    bad_three = write(tmp_path, "three.yaml", "descriptors: []\n")
    with pytest.raises(InvalidConfigError) as raised:
        load_config([bad_one, good, bad_three])
    assert [(e.file, e.line) for e in raised.value.errors] == [
        (str(bad_one), 2),
        (str(bad_three), 1),
    ]
    # The exception's text is one `file:line: message` per error.
    assert str(raised.value).splitlines() == [str(e) for e in raised.value.errors]
    assert str(raised.value).startswith(f"{bad_one}:2: unknown key 'bogus'")


# -- accepted input ------------------------------------------------------------------------


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


def test_unlimited_without_unit(tmp_path: Path) -> None:
    config = load_text(tmp_path, with_rate_limit("{unlimited: true, name: free}"))
    (rule,) = config.rules
    assert rule.unlimited
    assert rule.limit is None
    assert rule.name == "free"


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


# -- discovery -----------------------------------------------------------------------------


def domain_file(name: str) -> str:
    return f"domain: {name}\ndescriptors:\n  - key: k\n    rate_limit: {{unit: second}}\n"


def test_directory_recurses_in_sorted_order(tmp_path: Path) -> None:
    # Created out of order so that creation order cannot pass for sorted order.
    for relative in ["x/y/deep.yaml", "m.yml", "x/b.yaml", "a.yaml"]:
        write(tmp_path, relative, domain_file(Path(relative).stem))
    config = load_config([tmp_path])
    assert config.files == tuple(
        str(tmp_path / relative) for relative in ["a.yaml", "m.yml", "x/b.yaml", "x/y/deep.yaml"]
    )
    assert [rule.domain for rule in config.rules] == ["a", "m", "b", "deep"]


def test_directory_skips_dot_files_dot_dirs_and_non_yaml(tmp_path: Path) -> None:
    write(tmp_path, "real.yaml", domain_file("real"))
    write(tmp_path, ".hidden.yaml", "this: is: not: valid")
    write(tmp_path, ".git/config.yaml", "garbage: [")
    write(tmp_path, "sub/.swap.yaml", "garbage: [")
    write(tmp_path, "notes.txt", "garbage: [")
    write(tmp_path, "real.yaml.bak", "garbage: [")
    write(tmp_path, "sub/inner.yml", domain_file("inner"))
    config = load_config([tmp_path])
    assert config.files == (str(tmp_path / "real.yaml"), str(tmp_path / "sub/inner.yml"))
    assert set(config.domains) == {"real", "inner"}


def test_kubernetes_configmap_mount_loads_each_domain_once(tmp_path: Path) -> None:
    mount = tmp_path / "config"
    data = mount / "..2024_01_01"
    write(data, "a.yaml", domain_file("alpha"))
    write(data, "b.yaml", domain_file("beta"))
    os.symlink("..2024_01_01", mount / "..data")
    os.symlink("..data/a.yaml", mount / "a.yaml")
    os.symlink("..data/b.yaml", mount / "b.yaml")
    config = load_config([mount])
    assert sorted(config.domains) == ["alpha", "beta"]
    assert [rule.domain for rule in config.rules] == ["alpha", "beta"]
    assert config.files == (str(mount / "a.yaml"), str(mount / "b.yaml"))
    assert check_paths([mount]) == []


def test_a_file_given_twice_is_loaded_once(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", domain_file("alpha"))
    alias = tmp_path / "sub" / ".." / "a.yaml"
    (tmp_path / "sub").mkdir()
    config = load_config([path, tmp_path, alias, str(path)])
    assert config.files == (str(path),)
    assert [rule.domain for rule in config.rules] == ["alpha"]


def test_a_symlink_and_its_target_load_once(tmp_path: Path) -> None:
    target = write(tmp_path, "real/a.yaml", domain_file("alpha"))
    link = tmp_path / "link.yaml"
    os.symlink(target, link)
    config = load_config([link, target])
    assert config.files == (str(link),)
    assert list(config.domains) == ["alpha"]


# -- `ratelimitd check` --------------------------------------------------------------------


def test_check_command_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "ok.yaml", domain_file("fine"))
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [f"ok: {path}"]


def test_check_command_reports_every_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = """
        domain: d
        descriptors:
          - key: a
            rate_limit: {unit: minutes, requests_per_units: 1}
          - key: a
    """
    path = write(tmp_path, "bad.yaml", text)
    good = write(tmp_path, "good.yaml", domain_file("fine"))
    assert main(["check", str(good), str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith(f"{path}:4: unknown key 'requests_per_units'")
    assert lines[1].startswith(f"{path}:4: unknown unit 'minutes'")
    assert lines[2].startswith(f"{path}:5: duplicate descriptor a")
    assert not any(line.startswith("ok:") for line in lines)


def test_check_command_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.yaml"
    assert main(["check", str(missing)]) == 1
    assert capsys.readouterr().out.splitlines() == [f"{missing}: no such file or directory"]


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


def test_directory_order_is_by_relative_path(tmp_path: Path) -> None:
    write(tmp_path / "conf", "b.yaml", domain_file("b"))
    write(tmp_path / "conf" / "a", "z.yaml", domain_file("a_z"))
    config = load_config([tmp_path / "conf"])
    assert list(config.domains) == ["a_z", "b"]


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
