"""`ratelimitd explain --bucket`: the rule a bucket resolves to and the fleet's split as the
demand store (a real Redis) holds it."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from ratelimitd.cli import main
from ratelimitd.core.quota_service import demand_key
from ratelimitd.model.quota import Demand, bucket_id
from ratelimitd.storage.clock import wall_clock_us
from ratelimitd.storage.demand import RedisDemand

CONFIG = """
domain: web
descriptors:
  - key: tenant
    value: acme
    rate_limit: {unit: minute, requests_per_unit: 600}
rlqs:
  bucket_keys: [tenant]
"""


def test_a_bucket_with_two_envoys(
    tmp_path: Path,
    redis_url: str,
    run: Callable[[Coroutine[Any, Any, Any]], Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "rlqs.yaml"
    config.write_text(CONFIG)
    store = RedisDemand(redis_url, timeout=5)
    key = demand_key("web", bucket_id({"tenant": "acme"}))
    now = wall_clock_us()
    run(store.record(key, Demand("busy", 32.0, now, 5.0, 0.77), [], 60))
    run(store.record(key, Demand("light", 8.0, now, 5.0, 0.23), [], 60))
    run(store.close())
    argv = ["explain", "--config", str(config), "--redis-url", redis_url, "--domain", "web"]
    assert main([*argv, "--bucket", "tenant=acme"], {}) == 0
    text = capsys.readouterr().out
    assert "-> rule web.tenant_acme" in text
    assert "600 per minute across the fleet (10/s)" in text
    assert "envoy busy: demand 32.00/s, assigned 0.770, would get 0.770 now" in text
    assert main([*argv, "--bucket", "tenant=acme", "--json"], {}) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["resolves_to"]["rule"] == "web.tenant_acme"
    shares = {envoy["client"]: round(envoy["would_get"], 3) for envoy in found["envoys"]}
    assert shares == {"busy": 0.77, "light": 0.23}


def test_bucket_and_descriptor_exclude_each_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "rlqs.yaml"
    config.write_text(CONFIG)
    argv = ["explain", "--config", str(config), "--domain", "web", "--bucket", "tenant=acme"]
    with pytest.raises(SystemExit):
        main([*argv, "--descriptor", "tenant=acme"], {})
    assert "give one of them" in capsys.readouterr().err
