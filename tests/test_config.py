"""The config loader's errors: each names its file, its 1-based line and what is wrong, and
all of them, of every file, are reported at once. (Errors in a `rate_limit`:
test_config_rules.py; what loads: test_config_accepted.py; paths: test_config_discovery.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from ratelimitd.config.errors import InvalidConfigError
from ratelimitd.config.loader import check_paths, load_config
from tests.config_files import (
    ExpectedError,
    assert_error,
    assert_errors,
    assert_one_error,
    errors_in,
    only_error,
    write,
)

# -- one file's errors ---------------------------------------------------------------------


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
    # duplicates
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
    assert_one_error(tmp_path, text, line, fragments)


# A file, and the line and message fragments of each of its errors, in order.
SEVERAL_ERRORS = [
    # unknown keys
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
    # structure
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
def test_several_errors(tmp_path: Path, text: str, expected: list[ExpectedError]) -> None:
    assert_errors(tmp_path, text, expected)


def test_unknown_key_without_close_match_has_no_suggestion(tmp_path: Path) -> None:
    error = only_error(tmp_path, "domain: d\nzzzzzz: 1\n")
    assert_error(error, tmp_path / "config.yaml", 2, "unknown key 'zzzzzz'")
    assert "did you mean" not in error.message


# -- several files, several errors ---------------------------------------------------------


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
