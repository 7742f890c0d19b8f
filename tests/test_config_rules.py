"""Errors in the fields of a `rate_limit` (unit, requests_per_unit, burst, replaces,
algorithm, failure_mode, flags) and of a file's `defaults:`, each at its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.config_files import (
    ExpectedError,
    assert_error,
    assert_errors,
    assert_one_error,
    errors_in,
    with_rate_limit,
)

# -- a rule's errors -----------------------------------------------------------------------


# A file, where its one error is (a line number, None for the whole file, or a marker text on
# that line), and fragments its message holds.
ONE_ERROR = [
    # unknown keys
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
    # defaults
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
        with_rate_limit("[second, 5]"), 4, ("rate_limit must be a mapping",), id="rate-limit-list"
    ),
]


@pytest.mark.parametrize(("text", "line", "fragments"), ONE_ERROR)
def test_one_error(
    tmp_path: Path, text: str, line: int | str | None, fragments: tuple[str, ...]
) -> None:
    assert_one_error(tmp_path, text, line, fragments)


# A file, and the line and message fragments of each of its errors, in order.
SEVERAL_ERRORS = [
    # flags
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
]


@pytest.mark.parametrize(("text", "expected"), SEVERAL_ERRORS)
def test_several_errors(tmp_path: Path, text: str, expected: list[ExpectedError]) -> None:
    assert_errors(tmp_path, text, expected)


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
