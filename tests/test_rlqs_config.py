"""A domain's `rlqs:` section: read into QuotaBuckets, every mistake at its file:line; and
buckets resolved to rules with the rate limit service's matching."""

from __future__ import annotations

from pathlib import Path

import pytest

from ratelimitd.core.quota_rules import resolve
from ratelimitd.model.quota import bucket_id
from ratelimitd.model.rules import Blanket, Rule
from tests.config_files import assert_one_error, load_text

DESCRIPTORS = """
domain: web
descriptors:
  - key: tenant
    value: acme
    rate_limit: {unit: minute, requests_per_unit: 600}
    descriptors:
      - key: route
        value: /search
        rate_limit: {unit: minute, requests_per_unit: 60, name: search}
  - key: tenant
    value: "team-*"
    rate_limit: {unit: minute, requests_per_unit: 100}
  - key: tenant
    value: free
    rate_limit: {unlimited: true}
"""


def rlqs(section: str) -> str:
    return DESCRIPTORS + "rlqs:\n" + section


@pytest.mark.parametrize(
    ("bucket", "expected"),
    [
        ({"tenant": "acme"}, "web.tenant_acme"),
        # Keys in bucket_keys order, whatever the bucket_id's order; other keys ignored.
        ({"route": "/search", "env": "prod", "tenant": "acme"}, "search"),
        ({"tenant": "team-blue"}, "web.tenant_team-*"),
        ({"tenant": "free"}, Blanket.ALLOW_ALL),
        ({"tenant": "nobody"}, Blanket.DENY_ALL),  # unmatched
        ({"env": "prod"}, Blanket.DENY_ALL),  # none of the keys
    ],
)
def test_buckets_resolve_as_descriptors_do(
    tmp_path: Path, bucket: dict[str, str], expected: str | Blanket
) -> None:
    config = load_text(tmp_path, rlqs("  bucket_keys: [tenant, route]\n  unmatched: deny_all\n"))
    found = resolve(config, "web", bucket_id(bucket))
    if isinstance(expected, Blanket):
        assert found is expected
    else:
        assert isinstance(found, Rule)
        assert found.label == expected


def test_unmatched_defaults_to_allow_all_and_may_be_a_rule(tmp_path: Path) -> None:
    config = load_text(tmp_path, rlqs("  bucket_keys: [tenant]\n"))
    assert resolve(config, "web", bucket_id({"tenant": "x"})) is Blanket.ALLOW_ALL
    config = load_text(
        tmp_path,
        rlqs("  bucket_keys: [tenant]\n  unmatched: {unit: minute, requests_per_unit: 5}\n"),
    )
    found = resolve(config, "web", bucket_id({"tenant": "x"}))
    assert isinstance(found, Rule)
    assert found.limit is not None
    assert found.limit.requests_per_unit == 5


def test_a_domain_without_rlqs_has_no_buckets(tmp_path: Path) -> None:
    config = load_text(tmp_path, DESCRIPTORS)
    assert resolve(config, "web", bucket_id({"tenant": "acme"})) is None
    assert resolve(config, "other", bucket_id({"tenant": "acme"})) is None


@pytest.mark.parametrize(
    ("section", "marker", "fragments"),
    [
        (
            "  bucket_keys: [tenant]\n  unmatch: deny_all\n",
            "unmatch:",
            ("unknown key 'unmatch'", "unmatched"),
        ),
        ("  unmatched: allow_all\n", "unmatched:", ("needs 'bucket_keys'",)),
        ("  bucket_keys: []\n", "bucket_keys:", ("needs 'bucket_keys'",)),
        ("  bucket_keys: [tenant, tenant]\n", "bucket_keys:", ("'tenant' is listed twice",)),
        (
            "  bucket_keys: [tenant]\n  unmatched: deny\n",
            "unmatched:",
            ("unknown unmatched 'deny'", "deny_all"),
        ),
        (
            "  bucket_keys: [tenant]\n  unmatched: {unit: fortnight, requests_per_unit: 5}\n",
            "unmatched:",
            ("fortnight",),
        ),
    ],
)
def test_mistakes_are_named_at_their_line(
    tmp_path: Path, section: str, marker: str, fragments: tuple[str, ...]
) -> None:
    assert_one_error(tmp_path, rlqs(section), marker, fragments)
