"""GET /metrics after known traffic: exact counts on one process and summed over workers,
store errors and the circuit breaker, config reloads, and label values that no request can
multiply."""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import signal
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from ratelimitd.model.messages import (
    Code,
    Decision,
    InvalidRequestError,
    Result,
    Status,
    StoreUnavailableError,
)
from ratelimitd.model.rules import FailureMode, Limit, Rule, Source, Unit
from ratelimitd.observe import metrics
from ratelimitd.transports.errors import error_status
from ratelimitd.transports.grpc_status import NAMES, RESOURCE_EXHAUSTED, GrpcError
from tests.conftest import Ratelimitd, RatelimitdFactory, RedisServer, wait_until

CONFIG = """
domain: m
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 2, name: per_tenant}
  - key: api_key
    detailed_metric: true
    rate_limit: {unit: minute, requests_per_unit: 100}
  - key: trial
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
"""
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: Ratelimitd) -> Samples:
    """Every sample of /metrics, by name and labels (pid labels dropped, values summed)."""
    status, body = server.http("/metrics")
    assert status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            labels = frozenset((k, v) for k, v in sample.labels.items() if k != "pid")
            key = (sample.name, labels)
            samples[key] = samples.get(key, 0.0) + sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def pids(server: Ratelimitd, name: str) -> set[str]:
    """The pid labels of a live gauge: one per worker reporting it."""
    _, body = server.http("/metrics")
    return {
        sample.labels["pid"]
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == name and "pid" in sample.labels
    }


def serving_pids(server: Ratelimitd, event: str) -> set[str]:
    """The pids that logged `event`."""
    found = set()
    for line in server.logs().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                found.add(str(record["pid"]))
    return found


def ask(target: str, *pairs: tuple[str, str], domain: str = "m") -> rls_pb2.RateLimitResponse:
    """One request on a channel of its own (so several workers each get some)."""
    request = rls_pb2.RateLimitRequest(
        domain=domain,
        descriptors=[
            ratelimit_pb2.RateLimitDescriptor(
                entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in pairs]
            )
        ],
    )
    with grpc.insecure_channel(target) as channel:
        answer: rls_pb2.RateLimitResponse = rls_pb2_grpc.RateLimitServiceStub(
            channel
        ).ShouldRateLimit(request, timeout=5)
    return answer


def send_known_traffic(target: str) -> None:
    """3 requests of one tenant (2 OK, 1 over), 3 of detailed api keys, 2 of a shadow rule
    (1 shadow over), 1 of an unknown domain, 1 invalid."""
    codes = [ask(target, ("tenant", "a")).overall_code for _ in range(3)]
    assert codes == [rls_pb2.RateLimitResponse.OK] * 2 + [rls_pb2.RateLimitResponse.OVER_LIMIT]
    for key in ("k1", "k1", "k2"):
        ask(target, ("api_key", key))
    for _ in range(2):
        assert ask(target, ("trial", "t")).overall_code == rls_pb2.RateLimitResponse.OK
    ask(target, ("tenant", "a"), domain="elsewhere")
    with pytest.raises(grpc.RpcError):
        ask(target, ("", "empty key"))


def assert_known_counts(samples: Samples) -> None:
    requests = "ratelimitd_requests_total"
    assert value(samples, requests, domain="m", code="OK") == 7
    assert value(samples, requests, domain="m", code="OVER_LIMIT") == 1
    assert value(samples, requests, domain="_unknown", code="OK") == 1
    assert value(samples, requests, domain="_unknown", code="INVALID_ARGUMENT") == 1
    assert value(samples, "ratelimitd_request_duration_seconds_count") == 10

    decisions = "ratelimitd_decisions_total"
    assert value(samples, decisions, domain="m", rule="per_tenant", result="within_limit") == 1
    assert value(samples, decisions, domain="m", rule="per_tenant", result="near_limit") == 1
    assert value(samples, decisions, domain="m", rule="per_tenant", result="over_limit") == 1
    assert value(samples, decisions, domain="m", rule="m.trial", result="near_limit") == 1
    assert value(samples, decisions, domain="m", rule="m.trial", result="shadow_over_limit") == 1
    assert value(samples, decisions, domain="m", rule="m.api_key", result="within_limit") == 3

    detailed = "ratelimitd_detailed_decisions_total"
    k1 = {"domain": "m", "rule": "m.api_key", "result": "within_limit", "descriptor": "api_key_k1"}
    assert value(samples, detailed, **k1) == 2
    assert value(samples, detailed, **(k1 | {"descriptor": "api_key_k2"})) == 1
    assert sum(v for (name, _), v in samples.items() if name == detailed) == 3


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(CONFIG)
    return path


def test_one_process_counts_exactly(ratelimitd: RatelimitdFactory, config: Path) -> None:
    server = ratelimitd(config)
    send_known_traffic(server.grpc_target)
    samples = scrape(server)
    assert_known_counts(samples)
    assert value(samples, "ratelimitd_config_rules") == 3
    assert value(samples, "ratelimitd_store_batch_requests_count") == 0  # in-memory: no Redis
    # The event loop's lag is measured a few times a second, whatever the traffic.
    wait_until(
        lambda: value(scrape(server), "ratelimitd_event_loop_lag_seconds_count") >= 2,
        10,
        "the event loop's lag measured",
    )


@pytest.mark.parametrize("transport", ["grpc", "asgi"])
def test_workers_add_up(
    ratelimitd: RatelimitdFactory, config: Path, redis_url: str, transport: str
) -> None:
    server = ratelimitd(config, redis_url=redis_url, transport=transport, workers=2)
    wait_until(lambda: len(serving_pids(server, "worker_serving")) == 2, 20, "both workers serving")
    assert pids(server, "ratelimitd_config_hash") == serving_pids(server, "worker_serving")
    send_known_traffic(server.grpc_target)
    # Each worker publishes what it counted every second (and at once when it is scraped):
    # wait until the worker not scraped has published its share too.
    wait_until(
        lambda: value(scrape(server), "ratelimitd_request_duration_seconds_count") >= 10,
        10,
        "every worker's calls published",
    )
    samples = scrape(server)
    assert_known_counts(samples)
    assert value(samples, "ratelimitd_config_rules") == 6  # 3 in each worker
    # Every decision went to Redis (the unknown domain and the invalid request did not).
    assert value(samples, "ratelimitd_store_batch_requests_sum") == 8
    assert value(samples, "ratelimitd_store_errors_total") == 0


def test_store_errors_and_the_circuit_breaker(
    ratelimitd: RatelimitdFactory, config: Path, own_redis: RedisServer
) -> None:
    server = ratelimitd(
        config,
        "--breaker-threshold",
        "3",
        "--breaker-cooldown",
        "3600",
        redis_url=own_redis.url,
    )
    ask(server.grpc_target, ("tenant", "a"))
    own_redis.process.kill()
    own_redis.process.wait(timeout=10)
    for _ in range(5):  # allowed by failure mode; the circuit opens after the third
        assert ask(server.grpc_target, ("tenant", "a")).overall_code == rls_pb2.RateLimitResponse.OK
    samples = scrape(server)
    errors = {
        dict(labels)["error"]: v
        for (name, labels), v in samples.items()
        if name == "ratelimitd_store_errors_total"
    }
    assert sum(errors.values()) == 3, errors
    assert value(samples, "ratelimitd_store_batch_requests_count") == 4
    assert value(samples, "ratelimitd_store_circuit_state") == 1
    assert value(samples, "ratelimitd_store_circuit_transitions_total", state="open") == 1
    failed = value(samples, "ratelimitd_decisions_total", domain="m", rule="per_tenant")
    assert failed == 0  # results are labelled: none without one
    allowed = value(
        samples,
        "ratelimitd_decisions_total",
        domain="m",
        rule="per_tenant",
        result="failure_allowed",
    )
    assert allowed == 5


def test_reloads_are_counted_and_the_config_hash_follows(
    ratelimitd: RatelimitdFactory, config: Path
) -> None:
    server = ratelimitd(config, "--config-poll-interval", "3600")
    first = value(scrape(server), "ratelimitd_config_hash")
    config.write_text("domain: [")
    server.process.send_signal(signal.SIGHUP)
    wait_until(
        lambda: value(scrape(server), "ratelimitd_config_reloads_total", result="failure") == 1,
        10,
        "a failed reload counted",
    )
    assert value(scrape(server), "ratelimitd_config_hash") == first
    config.write_text(CONFIG.replace("requests_per_unit: 2,", "requests_per_unit: 3,"))
    server.process.send_signal(signal.SIGHUP)
    wait_until(
        lambda: value(scrape(server), "ratelimitd_config_reloads_total", result="success") == 1,
        10,
        "a reload counted",
    )
    assert value(scrape(server), "ratelimitd_config_hash") != first


def test_json_decisions_count_too(ratelimitd: RatelimitdFactory, config: Path) -> None:
    server = ratelimitd(config)
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=5)
    body = {"domain": "m", "descriptors": [{"entries": [{"key": "tenant", "value": "j"}]}]}
    for payload in (json.dumps(body), "{not json"):
        connection.request("POST", "/json", body=payload)
        connection.getresponse().read()
    connection.close()
    samples = scrape(server)
    assert value(samples, "ratelimitd_requests_total", domain="m", code="OK") == 1
    assert (
        value(samples, "ratelimitd_requests_total", domain="_unknown", code="INVALID_ARGUMENT") == 1
    )


# -- label values no client can multiply ------------------------------------------------------

RULE = Rule(
    domain="d",
    full_key="d.k",
    limit=Limit("token_bucket", 1, Unit.SECOND, 1),
    name=None,
    replaces=frozenset(),
    shadow_mode=False,
    detailed_metric=True,
    failure_mode=FailureMode.ALLOW,
    source=Source("d.yaml", 3),
)


def test_detailed_series_stop_at_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "DETAILED_SERIES_CAP", 2)
    recorder = metrics.Recorder()
    decision = Decision(Code.OK, (Status(Code.OK, RULE, 0, 0, Result.WITHIN_LIMIT),))
    for value_ in ("a", "b", "c", "d", "a"):
        recorder.decided(decision, (f"k_{value_}",))
    recorder.publish()
    counted = {
        sample.labels["descriptor"]: sample.value
        for family in metrics.DETAILED_DECISIONS.collect()
        for sample in family.samples
        if sample.labels["rule"] == "d.k" and sample.name.endswith("_total")
    }
    assert counted == {"k_a": 2, "k_b": 1, "_other": 2}


def test_limit_overrides_are_one_series() -> None:
    override = dataclasses.replace(RULE, source=None, full_key="d.k_anything")
    assert metrics.rule_label(override) == "_override"
    assert metrics.rule_label(RULE) == "d.k"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (asyncio.CancelledError(), "CANCELLED"),
        (StoreUnavailableError("down"), "UNAVAILABLE"),
        (InvalidRequestError("bad"), "INVALID_ARGUMENT"),
        (GrpcError(RESOURCE_EXHAUSTED, "big"), "RESOURCE_EXHAUSTED"),
        (RuntimeError("bug"), "INTERNAL"),
    ],
)
def test_a_call_that_ends_in_an_error_is_counted_by_its_code(
    error: BaseException, code: str
) -> None:
    # The one table every transport answers and counts failed calls by.
    assert NAMES[error_status(error)] == code


def test_published_counts_add_up_in_the_exposition() -> None:
    # Buckets.publish reaches into prometheus-client's histogram: this fails if that changes.
    def count(name: str) -> float:
        return sum(
            sample.value
            for family in metrics.REQUEST_DURATION.collect()
            for sample in family.samples
            if sample.name == name and sample.labels.get("le") in (None, "0.0005", "+Inf")
        )

    before = (
        count("ratelimitd_request_duration_seconds_bucket"),
        count("ratelimitd_request_duration_seconds_count"),
    )
    recorder = metrics.Recorder()
    for seconds in (0.0001, 0.0005, 0.2):
        recorder.call("m", "OK", seconds)
    recorder.publish()
    after = (
        count("ratelimitd_request_duration_seconds_bucket"),
        count("ratelimitd_request_duration_seconds_count"),
    )
    # Two observations are <= 0.5 ms (the `le` bound includes it), all three <= +Inf.
    assert (after[0] - before[0], after[1] - before[1]) == (2 + 3, 3)
