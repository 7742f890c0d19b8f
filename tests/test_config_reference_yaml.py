"""YAML the reference loads, loaded the same way, with a warning at file:line for whatever is
ignored or overridden (docs/migrating.md).

The reference reads a file with gopkg.in/yaml.v2's `yaml.Unmarshal` (not UnmarshalStrict):
merge keys are expanded where they stand (of a list of mappings, the first wins), a later
duplicate key overwrites the earlier value (setMapIndex; a struct field is decoded again), a
null resets the field. Its key check is one flat set of keys for every level, and its structs
ignore the keys they do not have."""

from __future__ import annotations

from pathlib import Path

import pytest

from ratelimitd.cli import main
from ratelimitd.config.loader import check_files
from ratelimitd.model.rules import Config, Unit
from tests.config_files import assert_one_error, line_of, load_text, rule_at, write


def warnings_of(tmp_path: Path, text: str) -> list[str]:
    """The warnings of one valid file, as `check` prints them."""
    errors, warnings = check_files([write(tmp_path, "config.yaml", text)])
    assert errors == [], errors
    return warnings


def at(tmp_path: Path, text: str, marker: str) -> str:
    """`file:line` of the line of `text` holding `marker`."""
    return f"{tmp_path / 'config.yaml'}:{line_of(text, marker)}"


# -- duplicate keys: the later value wins ---------------------------------------------------

DUPLICATE_RATE = """
domain: d
descriptors:
  - key: a
    rate_limit:
      unit: second
      requests_per_unit: 1
      requests_per_unit: 2  # later
"""


def test_a_duplicate_key_takes_the_later_value_with_a_warning(tmp_path: Path) -> None:
    config = load_text(tmp_path, DUPLICATE_RATE)
    limit = rule_at(config, "d.a").limit
    assert limit is not None
    assert limit.requests_per_unit == 2
    assert warnings_of(tmp_path, DUPLICATE_RATE) == [
        f"{at(tmp_path, DUPLICATE_RATE, 'later')}: duplicate key 'requests_per_unit' "
        "(first at line 6): the later value is used"
    ]


def test_a_duplicate_domain_key_names_the_later_domain(tmp_path: Path) -> None:
    config = load_text(tmp_path, "domain: first\ndomain: second\n")
    assert list(config.domains) == ["second"]


def test_a_later_null_resets_the_key(tmp_path: Path) -> None:
    text = """
    domain: d
    descriptors:
      - key: a
        shadow_mode: true
        shadow_mode:
        rate_limit: {unit: second, requests_per_unit: 1}
    """
    assert rule_at(load_text(tmp_path, text), "d.a").shadow_mode is False


def test_a_duplicate_rate_limit_takes_the_later_one(tmp_path: Path) -> None:
    text = """
    domain: d
    descriptors:
      - key: a
        rate_limit: {unit: second, requests_per_unit: 1}
        rate_limit: {unit: hour, requests_per_unit: 3}
    """
    limit = rule_at(load_text(tmp_path, text), "d.a").limit
    assert limit is not None
    assert (limit.unit, limit.requests_per_unit) == (Unit.HOUR, 3)


def test_duplicate_descriptors_in_a_list_stay_an_error(tmp_path: Path) -> None:
    text = """
    domain: d
    descriptors:
      - key: a
      - key: a  # again
    """
    assert_one_error(tmp_path, text, "again", ("duplicate descriptor a",))


# -- merge keys -------------------------------------------------------------------------------

MERGED = """
domain: d
descriptors:
  - key: base
    rate_limit: &per_minute
      unit: minute
      requests_per_unit: 10
  - key: merged
    rate_limit:
      <<: *per_minute
      requests_per_unit: 5  # written out after the merge: wins
  - key: before
    rate_limit:
      requests_per_unit: 7  # written out before the merge: the merge overrides it
      <<: *per_minute
  - key: listed
    rate_limit:
      <<: [{unit: hour, requests_per_unit: 1}, {unit: second, requests_per_unit: 2}]
"""


def limits(config: Config) -> dict[str, tuple[Unit, int]]:
    found = {}
    for rule in config.rules:
        assert rule.limit is not None
        found[rule.full_key] = (rule.limit.unit, rule.limit.requests_per_unit)
    return found


def test_merge_keys_expand_where_they_stand(tmp_path: Path) -> None:
    assert limits(load_text(tmp_path, MERGED)) == {
        "d.base": (Unit.MINUTE, 10),
        "d.merged": (Unit.MINUTE, 5),
        "d.before": (Unit.MINUTE, 10),
        "d.listed": (Unit.HOUR, 1),  # of a list of mappings, the first wins
    }


def test_only_a_merge_overriding_a_key_written_out_is_warned_about(tmp_path: Path) -> None:
    assert warnings_of(tmp_path, MERGED) == [
        f"{at(tmp_path, MERGED, 'the merge overrides it')}: 'requests_per_unit' of line "
        f"{line_of(MERGED, 'the merge overrides it')} is overridden by a merge key ('<<'): "
        "the later value is used"
    ]


def test_a_merge_key_needs_mappings(tmp_path: Path) -> None:
    text = """
    domain: d
    descriptors:
      - key: a
        rate_limit:
          <<: minute  # here
    """
    errors, _ = check_files([write(tmp_path, "config.yaml", text)])
    assert next((e.line, e.message) for e in errors) == (
        line_of(text, "here"),
        "a merge key ('<<') takes a mapping or a list of mappings",
    )


# -- the reference's keys where it ignores them -----------------------------------------------

IGNORED = """
domain: d
key: top  # 1
descriptors:
  - key: a
    unit: second  # 2
    domain: other  # 3
    rate_limit:
      unit: minute
      requests_per_unit: 1
      shadow_mode: true  # 4
      replaces:
        - name: x
          unit: hour  # 5
"""


def test_reference_keys_at_another_level_are_ignored_with_a_warning(tmp_path: Path) -> None:
    rule = rule_at(load_text(tmp_path, IGNORED), "d.a")
    assert rule.shadow_mode is False
    assert rule.limit is not None
    assert rule.limit.unit is Unit.MINUTE
    assert warnings_of(tmp_path, IGNORED) == [
        f"{at(tmp_path, IGNORED, '# 1')}: 'key' is ignored in the top level (as in the reference)",
        f"{at(tmp_path, IGNORED, '# 2')}: 'unit' is ignored in a descriptor (as in the reference)",
        f"{at(tmp_path, IGNORED, '# 3')}: 'domain' is ignored in a descriptor (as in the "
        "reference)",
        f"{at(tmp_path, IGNORED, '# 4')}: 'shadow_mode' is ignored in rate_limit (as in the "
        "reference)",
        f"{at(tmp_path, IGNORED, '# 5')}: 'unit' is ignored in a replaces entry (as in the "
        "reference)",
    ]


@pytest.mark.parametrize("key", ["algorithm", "bogus"])
def test_keys_the_reference_does_not_know_stay_errors_elsewhere(tmp_path: Path, key: str) -> None:
    text = f"""
    domain: d
    descriptors:
      - key: a
        {key}: x  # here
    """
    assert_one_error(tmp_path, text, "here", (f"unknown key '{key}' in a descriptor",))


def test_check_prints_the_warnings_and_succeeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "config.yaml", DUPLICATE_RATE)
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"warning: {path}:{line_of(DUPLICATE_RATE, 'later')}: duplicate key "
        "'requests_per_unit' (first at line 6): the later value is used",
        f"ok: {path}",
    ]


def test_a_mapping_merged_into_itself_is_an_error(tmp_path: Path) -> None:
    text = """
    domain: d
    descriptors:
      - key: a
        rate_limit: &r {unit: second, requests_per_unit: 1, <<: *r}
    """
    assert_one_error(tmp_path, text, "&r", ("merges a mapping into itself",))


def test_metadata_containing_itself_is_an_error(tmp_path: Path) -> None:
    text = """
    domain: d
    descriptors:
      - key: a
        metadata: &m {self: *m}
        rate_limit: {unit: second, requests_per_unit: 1}
    """
    assert_one_error(tmp_path, text, "&m", ("'metadata' contains itself",))


def test_metadata_reads_as_plain_data(tmp_path: Path) -> None:
    text = """
    domain: d
    descriptors:
      - key: a
        metadata:
          defaults: &shared {tier: gold, weight: 2}
          merged: {<<: *shared, weight: 5}
          list: [1, 2.5, true, ~, text, 2026-01-01]
        rate_limit: {unit: second, requests_per_unit: 1}
    """
    assert rule_at(load_text(tmp_path, text), "d.a").metadata == {
        "defaults": {"tier": "gold", "weight": 2.0},
        "merged": {"tier": "gold", "weight": 5.0},
        "list": [1.0, 2.5, True, None, "text", "2026-01-01"],
    }


def test_a_descriptors_list_containing_itself_is_an_error(tmp_path: Path) -> None:
    text = """
    domain: d
    descriptors: &d
      - key: a
        descriptors: *d
    """
    assert_one_error(tmp_path, text, "&d", ("'descriptors' contains itself",))
