"""Quota mode (the reference's `quota_mode: true` and QUOTA_MODE), on every store.

The reference's rule (envoyproxy/ratelimit#1045, #1059): a quota descriptor over its limit
keeps status OVER_LIMIT, but the overall code is OVER_LIMIT only if a non-quota descriptor is
over or every quota descriptor of the request is over; with QUOTA_MODE every descriptor is a
quota one, unmatched ones counting as passed and unlimited ones not counted. Ours adds the
all-or-nothing rule: a request answered OK commits what an admitted request commits (a quota
limit over its limit charged nothing), a rejected one commits nothing.

The descriptors have distinct first keys, so on Redis Cluster the requests span slots.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from ratelimitd.config.errors import InvalidConfigError
from ratelimitd.config.loader import load_config
from ratelimitd.core.engine import Engine
from ratelimitd.model.messages import Code, Decision, Descriptor, Request
from ratelimitd.model.rules import Config, Defaults
from tests.stores import Driver

OK, OVER = Code.OK, Code.OVER_LIMIT
Run = Callable[[Coroutine[Any, Any, Decision]], Decision]

CONFIG = """
domain: q
descriptors:
  - key: plain
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: quota_a
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: quota_b
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: quota_shadow
    quota_mode: true
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 0}
  - key: closed
    rate_limit: {unit: minute, requests_per_unit: 0}
  - key: free
    rate_limit: {unlimited: true}
  - key: tenant
    descriptors:
      - key: plain
        rate_limit: {unit: minute, requests_per_unit: 2}
      - key: quota_a
        quota_mode: true
        rate_limit: {unit: minute, requests_per_unit: 1}
"""


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "q.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def config(config_path: Path) -> Config:
    return load_config([config_path])


class Asker:
    """One engine on the driver's store: `ask("plain", "quota_a")` sends one descriptor per
    key (value `v`) and answers (overall code, status codes)."""

    def __init__(self, engine: Engine, run: Run) -> None:
        self.engine = engine
        self.run = run

    def decide(self, *keys: str) -> Decision:
        descriptors = tuple(Descriptor(_entries(key)) for key in keys)
        return self.run(self.engine.should_rate_limit(Request("q", descriptors)))

    def ask(self, *keys: str) -> tuple[Code, list[Code]]:
        decision = self.decide(*keys)
        return decision.code, [status.code for status in decision.statuses]

    def remaining(self, key: str) -> int:
        """What `key` has left, read by a check (cost 0) that consumes nothing."""
        descriptor = Descriptor(_entries(key), None, 0)
        decision = self.run(self.engine.should_rate_limit(Request("q", (descriptor,))))
        return decision.statuses[0].remaining


def _entries(key: str) -> tuple[tuple[str, str], ...]:
    """`key=v`, or for `tenant/key`, `tenant=t, key=v` (a tenant's keys share a slot)."""
    tenant, _, own = key.rpartition("/")
    return ((tenant, "t"), (own, "v")) if tenant else ((key, "v"),)


@pytest.fixture
def asker(driver: Driver, config: Config, run: Run) -> Asker:
    return Asker(Engine(config, driver.store), run)


@pytest.fixture
def global_asker(driver: Driver, config_path: Path, run: Run) -> Asker:
    """--quota-mode (the reference's QUOTA_MODE): the command line's defaults."""
    config = load_config([config_path], Defaults(quota_mode=True))
    return Asker(Engine(config, driver.store), run)


def test_a_lone_quota_over_its_limit_rejects(asker: Asker) -> None:
    assert asker.ask("quota_a") == (OK, [OK])
    # Every quota descriptor of the request is over.
    assert asker.ask("quota_a") == (OVER, [OVER])


def test_one_quota_over_and_one_within_is_ok_and_commits_the_admitted(asker: Asker) -> None:
    asker.ask("quota_a")
    assert asker.ask("quota_a", "quota_b") == (OK, [OVER, OK])
    assert asker.remaining("quota_b") == 2  # charged, as by any admitted request
    assert asker.ask("quota_a", "quota_b", "plain") == (OK, [OVER, OK, OK])
    assert (asker.remaining("quota_b"), asker.remaining("plain")) == (1, 1)


def test_every_quota_over_rejects_and_commits_nothing(asker: Asker) -> None:
    asker.ask("quota_a")
    asker.ask("quota_b", "quota_b", "quota_b")
    assert asker.ask("quota_a", "quota_b", "plain") == (OVER, [OVER, OVER, OK])
    assert asker.remaining("plain") == 2


def test_a_plain_descriptor_over_rejects_whatever_the_quotas(asker: Asker) -> None:
    assert asker.ask("closed", "quota_a", "quota_b") == (OVER, [OVER, OK, OK])
    assert (asker.remaining("quota_a"), asker.remaining("quota_b")) == (1, 3)


def test_quotas_within_and_a_plain_within_commit_all(asker: Asker) -> None:
    assert asker.ask("plain", "quota_a") == (OK, [OK, OK])
    assert (asker.remaining("plain"), asker.remaining("quota_a")) == (1, 0)


def test_a_quota_over_decides_with_the_requests_other_quotas_not_its_slots(
    asker: Asker,
) -> None:
    # On Cluster, tenant/plain and tenant/quota_a share a slot, quota_b is in another: the
    # slot alone would find every quota it sees over and reject its part.
    asker.ask("tenant/quota_a")
    assert asker.ask("tenant/plain", "tenant/quota_a", "quota_b") == (OK, [OK, OVER, OK])
    assert (asker.remaining("tenant/plain"), asker.remaining("quota_b")) == (1, 2)


def test_a_shadow_quota_counts_as_passed(asker: Asker) -> None:
    asker.ask("quota_a")
    # Its status is OK (shadow), as the reference rewrites it before counting quotas.
    assert asker.ask("quota_a", "quota_shadow") == (OK, [OVER, OK])


def test_quota_over_with_a_plain_within_rejects_and_refunds_it(asker: Asker) -> None:
    asker.ask("quota_a")
    assert asker.ask("plain", "quota_a") == (OVER, [OK, OVER])
    assert asker.remaining("plain") == 2


def test_global_quota_mode_makes_every_descriptor_a_quota(global_asker: Asker) -> None:
    assert global_asker.ask("closed", "plain") == (OK, [OVER, OK])
    assert global_asker.remaining("plain") == 1
    assert global_asker.ask("closed") == (OVER, [OVER])


def test_global_quota_mode_counts_unmatched_as_passed(global_asker: Asker) -> None:
    assert global_asker.ask("closed", "nothing") == (OK, [OVER, OK])
    global_asker.ask("quota_a")
    assert global_asker.ask("closed", "quota_a", "nothing") == (OK, [OVER, OVER, OK])


def test_global_quota_mode_does_not_count_unlimited(global_asker: Asker) -> None:
    assert global_asker.ask("closed", "free") == (OVER, [OVER, OK])


def test_an_answer_from_the_quota_rule_keeps_its_numbers(asker: Asker) -> None:
    asker.ask("quota_a")
    decision = asker.decide("quota_a", "quota_b")
    over = decision.statuses[0]
    assert (over.remaining, over.reset_us is not None and over.reset_us > 0) == (0, True)


def test_quota_mode_is_read_per_rule(config: Config, tmp_path: Path) -> None:
    quota = {rule.full_key: rule.quota_mode for rule in config.rules}
    assert (quota["q.quota_a"], quota["q.tenant.quota_a"], quota["q.plain"]) == (True, True, False)
    path = tmp_path / "bad.yaml"
    path.write_text("domain: b\ndescriptors:\n  - key: k\n    quota_mode: yes please\n")
    with pytest.raises(InvalidConfigError, match="'quota_mode' must be true or false"):
        load_config([path])
