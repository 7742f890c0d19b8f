"""The one rendering of a rule: its fields, and the /rlconfig and explain lines made from
them, every field shown (overdraft and detailed_metric included).

(Not through app.admin: test_explain checks that explain's process never loads protobuf code.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ratelimitd.config.loader import load_config
from ratelimitd.core.rule_fields import config_line, rule_fields, summary
from ratelimitd.model.rules import Config, Rule

CONFIG = """\
domain: d
descriptors:
  - key: quota
    detailed_metric: true
    shadow_mode: true
    quota_mode: true
    rate_limit:
      unit: minute
      requests_per_unit: 10
      burst: 20
      overdraft: true
      max_overdraft: 30
      name: tokens
  - key: free
    rate_limit: {unlimited: true, replaces: [{name: tokens}]}
  - key: five
    rate_limit: {unit: minute, unit_multiplier: 5, requests_per_unit: 100, algorithm: gcra}
"""


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "d.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def config(path: Path) -> Config:
    return load_config([path])


def rule(config: Config, full_key: str) -> Rule:
    (found,) = [rule for rule in config.rules if rule.full_key == full_key]
    return found


def test_the_fields_are_every_field_of_the_rule(config: Config, path: Path) -> None:
    assert rule_fields(rule(config, "d.quota")) == {
        "domain": "d",
        "full_key": "d.quota",
        "name": "tokens",
        "source": f"{path}:3",
        "unlimited": False,
        "algorithm": "token_bucket",
        "requests_per_unit": 10,
        "unit": "MINUTE",
        "burst": 20,
        "overdraft": 30,
        "replaces": [],
        "shadow_mode": True,
        "quota_mode": True,
        "detailed_metric": True,
        "failure_mode": "allow",
        "unit_multiplier": 1,
        "window": "minute",
        "calendar": None,
        "concurrency": None,
    }
    five = rule_fields(rule(config, "d.five"))
    assert (five["unit"], five["unit_multiplier"], five["window"]) == ("MINUTE", 5, "5 minutes")
    unlimited = rule_fields(rule(config, "d.free"))
    assert unlimited["unlimited"]
    assert (unlimited["algorithm"], unlimited["burst"], unlimited["overdraft"]) == (None,) * 3
    assert unlimited["replaces"] == ["tokens"]


def test_rlconfig_lines_show_overdraft_and_detailed_metric(config: Config, path: Path) -> None:
    assert [config_line(rule) for rule in config.rules] == [
        "d.quota: algorithm=token_bucket unit=MINUTE requests_per_unit=10 burst=20 overdraft=30"
        " name=tokens shadow_mode=true quota_mode=true detailed_metric=true failure_mode=allow"
        f" source={path}:3",
        f"d.free: unlimited replaces=tokens shadow_mode=false failure_mode=allow source={path}:14",
        "d.five: algorithm=gcra unit=MINUTE requests_per_unit=100 burst=100 unit_multiplier=5"
        f" shadow_mode=false failure_mode=allow source={path}:16",
    ]


def test_explain_lines_show_overdraft_and_detailed_metric(config: Config, path: Path) -> None:
    assert summary(rule(config, "d.quota")) == (
        "d.quota name=tokens token_bucket 10/minute burst=20 overdraft=30 shadow_mode"
        f" quota_mode detailed_metric failure_mode=allow ({path}:3)"
    )
    assert summary(rule(config, "d.free")) == (
        f"d.free unlimited replaces=tokens failure_mode=allow ({path}:14)"
    )
    assert (
        summary(rule(config, "d.five"))
        == f"d.five gcra 100/5 minutes failure_mode=allow ({path}:16)"
    )
