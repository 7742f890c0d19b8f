"""The RPCs bytes in, bytes out (`transports.rpc.Rpc`), on the in-memory store with a fake
clock: exact answers, no server, no network, no sleeping. Messages are built and read with
Envoy's generated code (xds-protos); the Rpc runs in tests/rpc_driver.py, a child process,
since ratelimitd's own generated code cannot share this one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf import json_format
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from tests.conftest import REPO

OK, OVER_LIMIT = rls_pb2.RateLimitResponse.OK, rls_pb2.RateLimitResponse.OVER_LIMIT
INVALID_ARGUMENT, NOT_FOUND = 3, 5

CONFIG = """
domain: api
extract:
  - entries:
      - {key: tenant, header: x-tenant-id}
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 3, name: per_tenant}
  - key: plan
    value: free
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: legacy
    rate_limit: {unit: hour, requests_per_unit: 2, algorithm: fixed_window}
"""


class RefusedError(Exception):
    """A call answered with a gRPC error instead of a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class Driver:
    """The child process holding the Rpc; one call at a time."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._process = process

    def send(self, call: str, data: bytes, advance_s: float = 0.0) -> bytes:
        """The answer's bytes; RefusedError for a gRPC error."""
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        asked = {"call": call, "data": data.hex(), "advance_s": advance_s}
        self._process.stdin.write(json.dumps(asked) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        assert line, "the driver exited"
        answer = json.loads(line)
        if "status" in answer:
            raise RefusedError(answer["status"], answer["message"])
        return bytes.fromhex(answer["data"])

    def rls(
        self, *descriptors: tuple[tuple[str, str], ...], advance_s: float = 0.0, hits: int = 0
    ) -> rls_pb2.RateLimitResponse:
        """ShouldRateLimit for the api domain's `descriptors`, after `advance_s` seconds."""
        request = rls_pb2.RateLimitRequest(domain="api", hits_addend=hits)
        for entries in descriptors:
            descriptor = ratelimit_pb2.RateLimitDescriptor()
            for key, value in entries:
                descriptor.entries.add(key=key, value=value)
            request.descriptors.append(descriptor)
        return parse(rls_pb2.RateLimitResponse(), self.send("rls", serialize(request), advance_s))


def serialize(message: Message) -> bytes:
    data: bytes = message.SerializeToString()
    return data


def parse(message: Message, data: bytes) -> Message:
    message.ParseFromString(data)
    return message


def run_driver(tmp_path_factory: pytest.TempPathFactory, *flags: str) -> Iterator[Driver]:
    """A Driver for CONFIG with the given `serve` flags, ended after the tests using it."""
    config = tmp_path_factory.mktemp("rpc") / "api.yaml"
    config.write_text(CONFIG)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.rpc_driver",
            "--config",
            str(config),
            "--log-level",
            "error",
            *flags,
        ],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield Driver(process)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        assert process.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Driver]:
    yield from run_driver(tmp_path_factory)


@pytest.fixture(scope="module")
def metadata_driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Driver]:
    yield from run_driver(tmp_path_factory, "--response-dynamic-metadata")


def tenant(name: str) -> tuple[tuple[str, str], ...]:
    return (("tenant", name),)


def headers(response: rls_pb2.RateLimitResponse) -> dict[str, str]:
    return {header.key: header.value for header in response.response_headers_to_add}


def test_a_bucket_empties_then_refills_on_the_clock(driver: Driver) -> None:
    answers = [driver.rls(tenant("refill")) for _ in range(3)]
    assert [a.overall_code for a in answers] == [OK] * 3
    assert [a.statuses[0].limit_remaining for a in answers] == [2, 1, 0]
    over = driver.rls(tenant("refill"))
    assert (over.overall_code, over.statuses[0].limit_remaining) == (OVER_LIMIT, 0)
    # 3 per minute: one token every 20 s, exactly, since the clock stood still.
    assert over.statuses[0].duration_until_reset.ToSeconds() == 20
    assert headers(over)["Retry-After"] == "20"
    assert driver.rls(tenant("refill"), advance_s=19.9).overall_code == OVER_LIMIT
    refilled = driver.rls(tenant("refill"), advance_s=0.1)
    assert (refilled.overall_code, refilled.statuses[0].limit_remaining) == (OK, 0)


def test_an_answer_carries_its_limit_and_headers(driver: Driver) -> None:
    answer = driver.rls(tenant("headers"))
    status = answer.statuses[0]
    assert (status.code, status.limit_remaining) == (OK, 2)
    assert status.current_limit.requests_per_unit == 3
    assert status.current_limit.unit == rls_pb2.RateLimitResponse.RateLimit.MINUTE
    assert status.current_limit.name == "per_tenant"
    assert headers(answer) == {
        "X-RateLimit-Limit": '3, 3;w=60;name="per_tenant"',
        "X-RateLimit-Remaining": "2",
        "X-RateLimit-Reset": "20",
    }


def test_a_rejected_request_consumes_nothing_from_its_other_limits(driver: Driver) -> None:
    free = (("plan", "free"),)
    assert driver.rls(tenant("all-or-nothing"), free).overall_code == OK
    rejected = driver.rls(tenant("all-or-nothing"), free)
    assert [s.code for s in rejected.statuses] == [OK, OVER_LIMIT]
    # The rejected request reports the tenant's counter untouched: what the first left.
    assert rejected.statuses[0].limit_remaining == 2
    assert driver.rls(tenant("all-or-nothing")).statuses[0].limit_remaining == 1


def test_fixed_windows_reset_on_the_hour_of_the_clock(driver: Driver) -> None:
    legacy = (("legacy", "x"),)
    answers = [driver.rls(legacy) for _ in range(3)]
    assert [a.overall_code for a in answers] == [OK, OK, OVER_LIMIT]
    left = answers[-1].statuses[0].duration_until_reset.ToSeconds()
    assert 0 < left <= 3600
    assert driver.rls(legacy, advance_s=left).overall_code == OK


def test_costs_and_unmatched_descriptors(driver: Driver) -> None:
    answer = driver.rls(tenant("cost"), (("unknown", "key"),), hits=2)
    charged, unmatched = answer.statuses
    assert (charged.code, charged.limit_remaining) == (OK, 1)
    assert unmatched.code == OK
    assert not unmatched.HasField("current_limit")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xff", "malformed RateLimitRequest"),
        (serialize(rls_pb2.RateLimitRequest(domain="")), "domain"),
    ],
    ids=["not-protobuf", "no-domain"],
)
def test_a_bad_request_is_invalid_argument_with_a_message(
    driver: Driver, data: bytes, message: str
) -> None:
    with pytest.raises(RefusedError) as refused:
        driver.send("rls", data)
    assert refused.value.status == INVALID_ARGUMENT
    assert message in refused.value.message


def test_ext_authz_check_extracts_then_denies_with_429(driver: Driver) -> None:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.headers["x-tenant-id"] = "GET", "/", "authz"
    request.attributes.context_extensions["domain"] = "api"
    answers = []
    for _ in range(4):
        answer = external_auth_pb2.CheckResponse()
        answer.ParseFromString(driver.send("check", serialize(request)))
        answers.append(answer)
    # RESOURCE_EXHAUSTED once the tenant's 3 are spent, with Envoy's 429 to send.
    assert [a.status.code for a in answers] == [0, 0, 0, 8]
    assert answers[-1].denied_response.status.code == 429


@pytest.mark.parametrize(
    "service",
    ["", "envoy.service.ratelimit.v3.RateLimitService", "envoy.service.auth.v3.Authorization"],
)
def test_health_check_serves_each_service(driver: Driver, service: str) -> None:
    request = serialize(health_pb2.HealthCheckRequest(service=service))
    answer = parse(health_pb2.HealthCheckResponse(), driver.send("health", request))
    assert isinstance(answer, health_pb2.HealthCheckResponse)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_health_check_of_an_unknown_service_is_not_found(driver: Driver) -> None:
    request = serialize(health_pb2.HealthCheckRequest(service="no.such.Service"))
    with pytest.raises(RefusedError) as refused:
        driver.send("health", request)
    assert refused.value.status == NOT_FOUND


# -- dynamic metadata (--response-dynamic-metadata) ------------------------------------------


def test_answers_carry_no_dynamic_metadata_unless_asked(driver: Driver) -> None:
    assert not driver.rls(tenant("quiet")).HasField("dynamic_metadata")


def test_dynamic_metadata_names_the_request_and_the_limit_that_fired(
    metadata_driver: Driver,
) -> None:
    answers = [metadata_driver.rls(tenant("md"), (("plan", "free"),)) for _ in range(2)]
    first, over = (json_format.MessageToDict(a.dynamic_metadata) for a in answers)
    descriptors = [{"entries": ["tenant=md"]}, {"entries": ["plan=free"]}]
    assert first == {"domain": "api", "descriptors": descriptors}
    assert over == {
        "domain": "api",
        "descriptors": descriptors,
        "overLimit": [{"name": "api.plan_free", "remaining": 0.0, "resetSeconds": 60.0}],
        "firedLimit": "api.plan_free",
    }


def test_an_unknown_domain_carries_dynamic_metadata(metadata_driver: Driver) -> None:
    request = rls_pb2.RateLimitRequest(domain="elsewhere", hits_addend=3)
    request.descriptors.add().entries.add(key="k", value="v")
    answer = rls_pb2.RateLimitResponse.FromString(metadata_driver.send("rls", serialize(request)))
    assert json_format.MessageToDict(answer.dynamic_metadata) == {
        "domain": "elsewhere",
        "hitsAddend": 3.0,
        "descriptors": [{"entries": ["k=v"]}],
    }
