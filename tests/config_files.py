"""Writing config files for the loader's tests, and asserting the errors it reports. (Not a
test module, so pytest does not rewrite its asserts: those that compare say what they got.)"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ratelimitd.config.errors import ConfigError, InvalidConfigError
from ratelimitd.config.loader import check_paths, load_config
from ratelimitd.model.rules import Config, Defaults, Rule

# The line of an error, and fragments its message holds.
ExpectedError = tuple[int, tuple[str, ...]]


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
    assert list(raised.value.errors) == errors, (raised.value.errors, errors)
    return errors


def only_error(tmp_path: Path, text: str, name: str = "config.yaml") -> ConfigError:
    """The single error of one file (fails if there are none or several)."""
    errors = errors_in(tmp_path, text, name)
    assert len(errors) == 1, errors
    return errors[0]


def assert_error(error: ConfigError, path: Path, line: int | None, *fragments: str) -> None:
    """`error` is in `path` at `line`, and its message holds every fragment."""
    assert error.file == str(path), error
    assert error.line == line, error
    for fragment in fragments:
        assert fragment in error.message, f"{fragment!r} not in {error.message!r}"


def assert_one_error(
    tmp_path: Path, text: str, line: int | str | None, fragments: tuple[str, ...]
) -> None:
    """The file `text` has exactly one error, at `line` (or the line holding the marker
    `line`), and its message holds every fragment."""
    if isinstance(line, str):
        line = line_of(text, line)
    error = only_error(tmp_path, text)
    assert_error(error, tmp_path / "config.yaml", line, *fragments)


def assert_errors(tmp_path: Path, text: str, expected: list[ExpectedError]) -> None:
    """The file `text` has exactly the `expected` errors, in that order."""
    errors = errors_in(tmp_path, text)
    assert len(errors) == len(expected), errors
    for error, (line, fragments) in zip(errors, expected, strict=True):
        assert_error(error, tmp_path / "config.yaml", line, *fragments)


def load_text(tmp_path: Path, text: str, defaults: Defaults | None = None) -> Config:
    """Load one file holding `text`."""
    path = write(tmp_path, "config.yaml", text)
    return load_config([path]) if defaults is None else load_config([path], defaults)


def rule_at(config: Config, full_key: str) -> Rule:
    """The one rule whose full key is `full_key`."""
    matches = [rule for rule in config.rules if rule.full_key == full_key]
    assert len(matches) == 1, [rule.full_key for rule in config.rules]
    return matches[0]


def with_rate_limit(rate_limit: str) -> str:
    """A one-descriptor file whose rate_limit (on line 4) is the given flow mapping."""
    return f"domain: d\ndescriptors:\n  - key: k\n    rate_limit: {rate_limit}\n"


def domain_file(name: str) -> str:
    """A valid file of the domain `name`, with one rule."""
    return f"domain: {name}\ndescriptors:\n  - key: k\n    rate_limit: {{unit: second}}\n"
