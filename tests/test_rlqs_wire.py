"""The RLQS stream over the wire, driven by a client generated from xds-protos (Envoy's own
code, not ours): reports in, assignments out, on a running `ratelimitd serve`.

Only through a server process: our generated modules declare the same protobuf packages as
xds-protos', and one process cannot load both."""

from __future__ import annotations

import queue
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.service.rate_limit_quota.v3 import rlqs_pb2, rlqs_pb2_grpc
from envoy.type.v3 import ratelimit_strategy_pb2

from tests.conftest import RatelimitdFactory

CONFIG = """
domain: web
descriptors:
  - key: tenant
    value: acme
    rate_limit: {unit: minute, requests_per_unit: 600}
  - key: tenant
    value: free
    rate_limit: {unlimited: true}
rlqs:
  bucket_keys: [tenant]
  unmatched: deny_all
"""
Reports = rlqs_pb2.RateLimitQuotaUsageReports
Usage = Reports.BucketQuotaUsage
Strategy = ratelimit_strategy_pb2.RateLimitStrategy


def usage(
    allowed: int, denied: int = 0, **bucket: str
) -> rlqs_pb2.RateLimitQuotaUsageReports.BucketQuotaUsage:
    found: rlqs_pb2.RateLimitQuotaUsageReports.BucketQuotaUsage = Usage(
        bucket_id=rlqs_pb2.BucketId(bucket=bucket),
        num_requests_allowed=allowed,
        num_requests_denied=denied,
    )
    return found


class Stream:
    """One bidirectional stream: reports sent one by one, each response awaited."""

    def __init__(self, channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = ()):
        self._outbox: queue.Queue[rlqs_pb2.RateLimitQuotaUsageReports | None] = queue.Queue()
        stub = rlqs_pb2_grpc.RateLimitQuotaServiceStub(channel)
        self._responses = stub.StreamRateLimitQuotas(
            iter(self._outbox.get, None), metadata=metadata, timeout=30
        )

    def send(
        self, domain: str, *usages: rlqs_pb2.RateLimitQuotaUsageReports.BucketQuotaUsage
    ) -> rlqs_pb2.RateLimitQuotaResponse:
        self._outbox.put(Reports(domain=domain, bucket_quota_usages=usages))
        response: rlqs_pb2.RateLimitQuotaResponse = next(self._responses)
        return response

    def rest(self) -> Iterator[rlqs_pb2.RateLimitQuotaResponse]:
        """The responses until the server ends the stream (RpcError unless with OK)."""
        yield from self._responses

    def close(self) -> None:
        self._outbox.put(None)


@pytest.fixture(params=["grpc", "asgi"])
def channel(
    ratelimitd: RatelimitdFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[grpc.Channel]:
    """A channel to ratelimitd on each transport (asgi: the stream under pyvoy, full
    duplex)."""
    config = tmp_path / "rlqs.yaml"
    config.write_text(CONFIG)
    server = ratelimitd(config, transport=request.param)
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield channel


def test_a_stream_gets_assignments_blankets_and_abandons(channel: grpc.Channel) -> None:
    stream = Stream(channel)
    try:
        first = stream.send(
            "web",
            usage(1, tenant="acme", route="/search"),
            usage(1, tenant="free"),
            usage(1, tenant="other"),
        )
        acme, free, other = first.bucket_action
        # In the order reported, each with its bucket_id (all its keys).
        assert dict(acme.bucket_id.bucket) == {"tenant": "acme", "route": "/search"}
        assert dict(other.bucket_id.bucket) == {"tenant": "other"}
        assigned = acme.quota_assignment_action
        bucket = assigned.rate_limit_strategy.token_bucket
        # Alone on the bucket: the whole quota of 600 a minute, in a bucket of half a
        # reporting interval (Envoy's 5 s assumed until the next report).
        assert (bucket.tokens_per_fill.value, bucket.fill_interval.seconds) == (600, 60)
        assert bucket.max_tokens == 25
        assert assigned.assignment_time_to_live.seconds == 15
        # ALLOW_ALL is the enum's zero: it must still be sent, as the oneof's choice.
        allowed = free.quota_assignment_action.rate_limit_strategy
        assert allowed.WhichOneof("strategy") == "blanket_rule"
        assert allowed.blanket_rule == Strategy.ALLOW_ALL
        rule = other.quota_assignment_action.rate_limit_strategy
        assert rule.blanket_rule == Strategy.DENY_ALL
        # Later reports need not repeat the domain.
        again = stream.send("", usage(5, tenant="acme"))
        assert again.bucket_action[0].HasField("quota_assignment_action")
    finally:
        stream.close()
    elsewhere = Stream(channel)
    try:
        [action] = elsewhere.send("no-such-domain", usage(1, tenant="acme")).bucket_action
        assert action.WhichOneof("bucket_action") == "abandon_action"
        assert dict(action.bucket_id.bucket) == {"tenant": "acme"}
    finally:
        elsewhere.close()


def test_a_first_report_without_domain_is_invalid_argument(channel: grpc.Channel) -> None:
    stream = Stream(channel)
    with pytest.raises(grpc.RpcError) as failure:
        stream.send("", usage(1, tenant="acme"))
    assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "names no domain" in str(failure.value.details())


def test_malformed_bytes_are_invalid_argument(channel: grpc.Channel) -> None:
    call: grpc.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
        "/envoy.service.rate_limit_quota.v3.RateLimitQuotaService/StreamRateLimitQuotas"
    )
    with pytest.raises(grpc.RpcError) as failure:
        next(iter(call(iter([b"\xff\xff\xff"]), timeout=10)))
    assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed RateLimitQuotaUsageReports" in str(failure.value.details())


def test_two_envoys_on_one_bucket_share_it(channel: grpc.Channel) -> None:
    envoys = [Stream(channel, (("x-rlqs-client", name),)) for name in ("a", "b")]
    try:
        shares = []
        for stream in envoys:
            [action] = stream.send("web", usage(1, tenant="acme")).bucket_action
            strategy = action.quota_assignment_action.rate_limit_strategy
            shares.append(strategy.token_bucket.tokens_per_fill.value)
        # a arrived alone and holds the quota; b gets its floor until a's share shrinks.
        assert shares == [600, 30]
    finally:
        for stream in envoys:
            stream.close()


def test_metrics_show_the_fleet_against_its_quota(
    ratelimitd: RatelimitdFactory, tmp_path: Path
) -> None:
    config = tmp_path / "rlqs.yaml"
    config.write_text(CONFIG)
    server = ratelimitd(config)
    with grpc.insecure_channel(server.grpc_target) as channel:
        stream = Stream(channel)
        try:
            stream.send("web", usage(7, 2, tenant="acme"))
            stream.send("", usage(5, 1, tenant="acme"))
        finally:
            stream.close()
    status, text = server.http("/metrics")
    assert status == 200
    series = {
        line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("ratelimitd_rlqs_")
    }
    labels = 'domain="web",rule="web.tenant_acme"'
    reported = (
        'ratelimitd_rlqs_reported_requests_total{domain="web",result="%s",rule="web.tenant_acme"}'
    )
    assert series[reported % "allowed"] == 12
    assert series[reported % "denied"] == 3
    assert series[f"ratelimitd_rlqs_quota_requests_per_second{{{labels}}}"] == 10
    assert series[f"ratelimitd_rlqs_reporting_envoys{{{labels}}}"] == 1
    assert series[f"ratelimitd_rlqs_assigned_fraction{{{labels}}}"] == 1


def test_a_stopping_server_ends_its_streams_cleanly(
    ratelimitd: RatelimitdFactory, tmp_path: Path
) -> None:
    """Streams never end on their own: at SIGTERM the grpc transport ends them with OK
    rather than leaving them to be cut after the drain timeout (Envoy keeps its assignments
    for their TTL and reopens the stream at its next report). Under pyvoy (asgi) the host
    closes the connection itself: the stream ends UNAVAILABLE, "Socket closed"."""
    config = tmp_path / "rlqs.yaml"
    config.write_text(CONFIG)
    server = ratelimitd(config)
    with grpc.insecure_channel(server.grpc_target) as channel:
        stream = Stream(channel)
        stream.send("web", usage(1, tenant="acme"))
        server.process.send_signal(signal.SIGTERM)
        assert list(stream.rest()) == []  # the stream ends, with status OK
        stream.close()
    assert server.process.wait(timeout=30) == 0
