"""Envoy's ext_authz API (envoy.service.auth.v3.Authorization/Check) as rate limiting.

- The hand-written CheckResponse encoder writes exactly what Envoy's own generated code
  (xds-protos) writes, for every kind of answer.
- authorize(): which domain, which descriptors, and how decisions become answers (OK with
  headers for the response, 429, 503), on the memory store and on a Redis that is not there.
- The decoder reads what Envoy sends: checked in a subprocess (it needs ratelimitd's protos,
  which cannot share this process with xds-protos).
- Real servers on both transports, called by an xds-protos client: Check answers, malformed
  requests, health, reflection and metrics.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.protobuf.descriptor_pool import DescriptorPool
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from ratelimitd.config.loader import load_config
from ratelimitd.core.authz import ALLOWED, AuthzDecision, Verdict, authorize
from ratelimitd.core.engine import Engine
from ratelimitd.core.problem import BodyMode
from ratelimitd.model.messages import HttpAttributes
from ratelimitd.storage.clock import FakeClock
from ratelimitd.storage.memory import MemoryStore
from ratelimitd.storage.redis import RedisStore
from ratelimitd.transports.authz_wire import encode_check_response
from tests.conftest import REPO, Ratelimitd, RatelimitdFactory, free_port, wait_until

AUTHZ_SERVICE = "envoy.service.auth.v3.Authorization"
RESOURCE_EXHAUSTED, UNAVAILABLE = 8, 14

CONFIG = """
domain: edge
extract:
  - entries:
      - {key: tenant, header: x-tenant-id}
  - entries:
      - {key: tenant, header: x-tenant-id}
      - {key: method, method: true}
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 3, name: per_tenant}
    descriptors:
      - key: method
        value: POST
        rate_limit: {unit: minute, requests_per_unit: 1, name: tenant_posts}
"""
# A domain without `extract:`.
PLAIN_CONFIG = """
domain: plain
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 1}
"""


def config_dir(directory: Path) -> Path:
    """CONFIG and PLAIN_CONFIG as the files of one config directory."""
    directory.mkdir(exist_ok=True)
    (directory / "edge.yaml").write_text(CONFIG)
    (directory / "plain.yaml").write_text(PLAIN_CONFIG)
    return directory


# A rule that leaves a store failure to Envoy: the Check answer is a 503.
UNAVAILABLE_CONFIG = """
domain: edge
extract:
  - entries:
      - {key: tenant, header: x-tenant-id}
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 3, failure_mode: unavailable}
"""


# -- the encoder against Envoy's generated code ----------------------------------------------


def expected(decision: AuthzDecision) -> external_auth_pb2.CheckResponse:
    """The same answer built with xds-protos."""
    options = [
        base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, value=v))
        for k, v in decision.headers
    ]
    response = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=decision.grpc_code))
    if decision.verdict is Verdict.OK:
        response.ok_response.response_headers_to_add.extend(options)
    else:
        response.denied_response.status.code = decision.http_status
        response.denied_response.headers.extend(options)
        response.denied_response.body = decision.body.decode()
    return response


header_fields = st.lists(st.tuples(st.text(min_size=1), st.text()), max_size=5).map(tuple)
answers = st.builds(
    AuthzDecision,
    st.sampled_from(list(Verdict)),
    header_fields,
    st.text().map(str.encode),  # the body is a proto string: UTF-8
)


@given(answers)
def test_encoder_writes_what_protobuf_writes(decision: AuthzDecision) -> None:
    ours = encode_check_response(decision)
    if decision.verdict is Verdict.OK:
        decision = decision._replace(body=b"")  # an OK carries no body
    assert ours == expected(decision).SerializeToString()
    assert external_auth_pb2.CheckResponse.FromString(ours) == expected(decision)


def test_each_verdict_maps_to_its_status_and_http_response() -> None:
    ok = external_auth_pb2.CheckResponse.FromString(encode_check_response(ALLOWED))
    assert ok.HasField("status")
    assert ok.status.code == 0
    assert ok.WhichOneof("http_response") == "ok_response"
    assert not ok.ok_response.response_headers_to_add

    over = external_auth_pb2.CheckResponse.FromString(
        encode_check_response(AuthzDecision(Verdict.OVER_LIMIT, (("Retry-After", "7"),), b"{}"))
    )
    assert over.status.code == RESOURCE_EXHAUSTED
    assert over.WhichOneof("http_response") == "denied_response"
    assert over.denied_response.status.code == 429
    assert [(h.header.key, h.header.value) for h in over.denied_response.headers] == [
        ("Retry-After", "7")
    ]
    assert over.denied_response.body == "{}"

    down = external_auth_pb2.CheckResponse.FromString(
        encode_check_response(AuthzDecision(Verdict.UNAVAILABLE))
    )
    assert (down.status.code, down.denied_response.status.code) == (UNAVAILABLE, 503)


# -- authorize(): domains, extraction and decisions ------------------------------------------

Run = Callable[[Coroutine[Any, Any, AuthzDecision]], AuthzDecision]


def request(
    tenant: str | None = None, *, domain: str | None = "edge", method: str = "GET"
) -> HttpAttributes:
    headers = {"x-tenant-id": tenant} if tenant is not None else {}
    extensions = {"domain": domain} if domain is not None else {}
    return HttpAttributes(method=method, path="/", headers=headers, context_extensions=extensions)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    config = load_config([config_dir(tmp_path / "config")])
    return Engine(config, MemoryStore(FakeClock()), body_mode=BodyMode.PROBLEM_JSON)


def test_ok_answers_carry_the_rate_limit_headers(engine: Engine, run: Run) -> None:
    answer = run(authorize(engine, request("acme")))
    assert answer.verdict is Verdict.OK
    assert (answer.grpc_code, answer.http_status, answer.domain) == (0, 0, "edge")
    assert dict(answer.headers) == {
        "X-RateLimit-Limit": '3, 3;w=60;name="per_tenant"',
        "X-RateLimit-Remaining": "2",
        "X-RateLimit-Reset": "20",
    }
    assert answer.body == b""


def test_over_limit_is_a_429_with_retry_after_and_problem_body(engine: Engine, run: Run) -> None:
    assert run(authorize(engine, request("busy", method="POST"))).verdict is Verdict.OK
    denied = run(authorize(engine, request("busy", method="POST")))
    assert denied.verdict is Verdict.OVER_LIMIT
    assert (denied.grpc_code, denied.http_status) == (RESOURCE_EXHAUSTED, 429)
    fields = dict(denied.headers)
    assert fields["Retry-After"] == "60"
    assert fields["Content-Type"] == "application/problem+json"
    assert [limit["name"] for limit in json.loads(denied.body)["limits"]] == ["tenant_posts"]
    # All-or-nothing: the rejected POST took nothing from the tenant's own limit.
    assert dict(run(authorize(engine, request("busy"))).headers)["X-RateLimit-Remaining"] == "1"


@pytest.mark.parametrize(
    ("attributes", "domain"),
    [
        (request("acme", domain=None), None),  # no domain, no default
        (request("acme", domain="unknown"), None),  # not in the config
        (request("acme", domain="plain"), "plain"),  # no `extract:`
        (request(None), "edge"),  # nothing to extract: the header is missing
    ],
    ids=["no-domain", "unknown-domain", "no-extract", "nothing-extracted"],
)
def test_without_descriptors_the_answer_is_ok_without_headers(
    engine: Engine, run: Run, attributes: HttpAttributes, domain: str | None
) -> None:
    assert run(authorize(engine, attributes)) == AuthzDecision(Verdict.OK, domain=domain)


def test_the_default_domain_applies_when_the_route_names_none(engine: Engine, run: Run) -> None:
    answer = run(authorize(engine, request("dflt", domain=None), default_domain="edge"))
    assert (answer.domain, dict(answer.headers)["X-RateLimit-Remaining"]) == ("edge", "2")
    # The route's own domain wins over the default.
    named = run(authorize(engine, request("dflt", domain="plain"), default_domain="edge"))
    assert named == AuthzDecision(Verdict.OK, domain="plain")


def test_answers_name_their_domain_and_verdict(engine: Engine, run: Run) -> None:
    answer = run(authorize(engine, request("counted", method="POST")))
    assert (answer.domain, answer.verdict) == ("edge", Verdict.OK)
    answer = run(authorize(engine, request("counted", method="POST")))
    assert (answer.domain, answer.verdict) == ("edge", Verdict.OVER_LIMIT)


def test_a_store_failure_left_to_envoy_is_a_503(
    write_config: Callable[[str], Path], loop: asyncio.AbstractEventLoop
) -> None:
    config = load_config([write_config(UNAVAILABLE_CONFIG)])
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    try:
        answer = loop.run_until_complete(authorize(Engine(config, store), request("down")))
    finally:
        loop.run_until_complete(store.close())
    assert answer == AuthzDecision(Verdict.UNAVAILABLE, domain="edge")
    assert (answer.grpc_code, answer.http_status) == (UNAVAILABLE, 503)


# -- the decoder, in a process of its own ----------------------------------------------------

DECODE = """
import json, sys
from ratelimitd.protos.envoy.service.auth.v3 import external_auth_pb2
from ratelimitd.transports import authz_codec
for line in sys.stdin:
    message = external_auth_pb2.CheckRequest.FromString(bytes.fromhex(line))
    print(json.dumps(authz_codec.decode(message)._asdict()))
"""


def decoded(*messages: external_auth_pb2.CheckRequest) -> list[dict[str, Any]]:
    """HttpAttributes (as dicts) of each request, decoded by ratelimitd's own code."""
    result = subprocess.run(
        [sys.executable, "-c", DECODE],
        input="".join(m.SerializeToString().hex() + "\n" for m in messages),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in result.stdout.splitlines()]


def full_request() -> external_auth_pb2.CheckRequest:
    """A CheckRequest with everything Envoy sends that ratelimitd reads, and more."""
    message = external_auth_pb2.CheckRequest()
    attributes = message.attributes
    source = attributes.source
    source.address.socket_address.address = "192.0.2.7"
    source.address.socket_address.port_value = 51234
    source.principal = "spiffe://example.org/ns/default/sa/client"
    source.certificate = "-----BEGIN CERTIFICATE-----"  # not read
    attributes.destination.address.socket_address.address = "10.0.0.1"
    attributes.destination.address.socket_address.port_value = 10000
    http = attributes.request.http
    http.id = "4711"
    http.method = "POST"
    http.path = "/v1/search?q=x"
    http.host = "api.example.com"
    http.scheme = "https"
    http.protocol = "HTTP/2"  # not read
    http.size = 42  # not read
    http.headers.update({":path": "/v1/search?q=x", "x-tenant-id": "acme", "X-Mixed": "v"})
    attributes.request.time.seconds = 1_700_000_000  # not read
    attributes.context_extensions.update({"domain": "edge", "team": "search"})
    attributes.metadata_context.filter_metadata["jwt"].update({"sub": "u1"})  # not read
    attributes.tls_session.sni = "api.example.com"  # not read
    return message


def test_the_decoder_reads_what_envoy_sends() -> None:
    raw = external_auth_pb2.CheckRequest()
    raw_http = raw.attributes.request.http
    raw_http.method = "GET"
    raw_http.header_map.headers.add(key="x-tenant-id", raw_value=b"acme")
    raw_http.header_map.headers.add(key="Accept", raw_value=b"text/html")
    raw_http.header_map.headers.add(key="accept", raw_value=b"application/json")
    raw_http.header_map.headers.add(key="x-bytes", raw_value=b"caf\xc3\xa9 \xff")
    raw.attributes.source.address.pipe.path = "/run/envoy.sock"  # a pipe has no IP

    full, from_raw, empty = decoded(full_request(), raw, external_auth_pb2.CheckRequest())
    assert full == {
        "method": "POST",
        "path": "/v1/search?q=x",
        "host": "api.example.com",
        "scheme": "https",
        "headers": {":path": "/v1/search?q=x", "x-tenant-id": "acme", "x-mixed": "v"},
        "source_address": "192.0.2.7",
        "source_port": 51234,
        "destination_address": "10.0.0.1",
        "destination_port": 10000,
        "context_extensions": {"domain": "edge", "team": "search"},
        "principal": "spiffe://example.org/ns/default/sa/client",
    }
    assert from_raw["headers"] == {
        "x-tenant-id": "acme",
        "accept": "text/html,application/json",
        "x-bytes": "café \ufffd",
    }
    assert (from_raw["source_address"], from_raw["source_port"]) == ("", 0)
    assert empty == HttpAttributes()._asdict()


# -- real servers, called by Envoy's generated client ----------------------------------------


@pytest.fixture(scope="module", params=["grpc", "asgi"])
def server(
    request: pytest.FixtureRequest,
    module_ratelimitd: RatelimitdFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Ratelimitd:
    """ratelimitd on each transport (memory store), shared by this module's tests: each test
    uses tenants of its own."""
    config = config_dir(tmp_path_factory.mktemp("authz"))
    return module_ratelimitd(config, "--over-limit-body", "problem-json", transport=request.param)


@pytest.fixture
def stub(server: Ratelimitd) -> Iterator[external_auth_pb2_grpc.AuthorizationStub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield external_auth_pb2_grpc.AuthorizationStub(channel)


def check_request(
    tenant: str | None, *, method: str = "GET", domain: str | None = "edge"
) -> external_auth_pb2.CheckRequest:
    message = external_auth_pb2.CheckRequest()
    http = message.attributes.request.http
    http.method, http.path, http.host = method, "/v1/search", "api.example.com"
    if tenant is not None:
        http.headers["x-tenant-id"] = tenant
    if domain is not None:
        message.attributes.context_extensions["domain"] = domain
    return message


def check(
    stub: external_auth_pb2_grpc.AuthorizationStub, message: external_auth_pb2.CheckRequest
) -> external_auth_pb2.CheckResponse:
    response: external_auth_pb2.CheckResponse = stub.Check(message, timeout=5)
    return response


def added(options: Any) -> dict[str, str]:
    return {option.header.key: option.header.value for option in options}


def test_check_allows_with_headers_then_denies_with_429(
    stub: external_auth_pb2_grpc.AuthorizationStub,
) -> None:
    answers = [check(stub, check_request("wire")) for _ in range(3)]
    assert [a.status.code for a in answers] == [0, 0, 0]
    assert [a.WhichOneof("http_response") for a in answers] == ["ok_response"] * 3
    remaining = [added(a.ok_response.response_headers_to_add) for a in answers]
    assert [fields["X-RateLimit-Remaining"] for fields in remaining] == ["2", "1", "0"]
    assert remaining[0]["X-RateLimit-Limit"] == '3, 3;w=60;name="per_tenant"'

    denied = check(stub, check_request("wire"))
    assert denied.status.code == RESOURCE_EXHAUSTED
    assert denied.denied_response.status.code == 429
    fields = added(denied.denied_response.headers)
    assert fields["Retry-After"] in {"19", "20"}
    assert fields["X-RateLimit-Remaining"] == "0"
    assert fields["Content-Type"] == "application/problem+json"
    problem = json.loads(denied.denied_response.body)
    assert [limit["name"] for limit in problem["limits"]] == ["per_tenant"]


def test_check_extracts_the_method_into_a_nested_descriptor(
    stub: external_auth_pb2_grpc.AuthorizationStub,
) -> None:
    assert check(stub, check_request("poster", method="POST")).status.code == 0
    denied = check(stub, check_request("poster", method="POST"))
    assert denied.status.code == RESOURCE_EXHAUSTED
    assert [x["name"] for x in json.loads(denied.denied_response.body)["limits"]] == [
        "tenant_posts"
    ]
    assert check(stub, check_request("poster", method="GET")).status.code == 0


@pytest.mark.parametrize(
    "message",
    [
        check_request("free", domain=None),
        check_request("free", domain="unknown"),
        check_request("free", domain="plain"),
        check_request(None),
        external_auth_pb2.CheckRequest(),
    ],
    ids=["no-domain", "unknown-domain", "no-extract", "nothing-extracted", "empty"],
)
def test_check_without_descriptors_allows_without_headers(
    stub: external_auth_pb2_grpc.AuthorizationStub, message: external_auth_pb2.CheckRequest
) -> None:
    for _ in range(3):  # never limited: `plain` would allow 1 a minute
        answer = check(stub, message)
        assert answer == external_auth_pb2.CheckResponse(
            status=status_pb2.Status(), ok_response=external_auth_pb2.OkHttpResponse()
        )


def test_authz_domain_applies_to_calls_that_name_none(
    ratelimitd: RatelimitdFactory, tmp_path: Path
) -> None:
    server = ratelimitd(config_dir(tmp_path), "--authz-domain", "edge")
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        answers = [check(stub, check_request("defaulted", domain=None)) for _ in range(4)]
        assert [a.status.code for a in answers] == [0, 0, 0, RESOURCE_EXHAUSTED]
        # A route's own domain still wins.
        assert check(stub, check_request("defaulted", domain="plain")).status.code == 0


def test_malformed_check_requests_get_invalid_argument(server: Ratelimitd) -> None:
    with grpc.insecure_channel(server.grpc_target) as channel:
        raw: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            f"/{AUTHZ_SERVICE}/Check"
        )
        with pytest.raises(grpc.RpcError) as caught:
            raw(b"\x0a\x05\xff\xff", timeout=5)  # attributes: 5 bytes promised, 2 sent
    error: grpc.Call = caught.value  # type: ignore[assignment]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed CheckRequest" in (error.details() or "")


def test_extracted_values_beyond_the_request_bounds_get_invalid_argument(
    ratelimitd: RatelimitdFactory, write_config: Callable[[str], Path]
) -> None:
    server = ratelimitd(write_config(CONFIG), "--max-value-length", "8")
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Check(check_request("a-tenant-name-too-long"), timeout=5)
    error: grpc.Call = caught.value  # type: ignore[assignment]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "--max-value-length" in (error.details() or "")


def test_health_reports_the_authorization_service(server: Ratelimitd) -> None:
    with grpc.insecure_channel(server.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=AUTHZ_SERVICE), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def requests_counted(server: Ratelimitd, domain: str, code: str) -> float:
    """ratelimitd_requests_total{domain, code} in /metrics."""
    status, body = server.http("/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            wanted = {"domain": domain, "code": code}
            if sample.name == "ratelimitd_requests_total" and sample.labels == wanted:
                return float(sample.value)
    return 0.0


def test_metrics_count_check_calls_by_domain_and_answer(
    ratelimitd: RatelimitdFactory, tmp_path: Path
) -> None:
    server = ratelimitd(config_dir(tmp_path / "config"))
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        for _ in range(3):
            check(stub, check_request("metered", method="POST"))
        check(stub, check_request("metered", domain="plain"))  # no extract: OK
        check(stub, check_request("metered", domain="unknown"))
    assert requests_counted(server, "edge", "OK") == 1
    assert requests_counted(server, "edge", "OVER_LIMIT") == 2
    assert requests_counted(server, "plain", "OK") == 1
    assert requests_counted(server, "_unknown", "OK") == 1


def test_reflection_describes_the_authorization_service(
    ratelimitd: RatelimitdFactory, write_config: Callable[[str], Path]
) -> None:
    server = ratelimitd(write_config(CONFIG))  # reflection: the grpc transport only
    with grpc.insecure_channel(server.grpc_target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert AUTHZ_SERVICE in database.get_services()
        pool = DescriptorPool(database)
        method = pool.FindServiceByName(AUTHZ_SERVICE).methods_by_name["Check"]
        assert method.input_type.full_name == "envoy.service.auth.v3.CheckRequest"
        assert method.output_type.full_name == "envoy.service.auth.v3.CheckResponse"
        http = pool.FindMessageTypeByName("envoy.service.auth.v3.AttributeContext.HttpRequest")
        official = external_auth_pb2.CheckRequest.DESCRIPTOR.fields_by_name["attributes"]
        envoys = official.message_type.nested_types_by_name["HttpRequest"]
        # Every field ours declares has Envoy's number and type.
        for field in http.fields:
            assert (field.number, field.type) == (
                envoys.fields_by_name[field.name].number,
                envoys.fields_by_name[field.name].type,
            )


@pytest.mark.parametrize("transport", ["grpc", "asgi"])
def test_check_answers_503_when_the_store_is_down_and_the_rule_leaves_it_to_envoy(
    ratelimitd: RatelimitdFactory, write_config: Callable[[str], Path], transport: str
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    server = ratelimitd(
        write_config(UNAVAILABLE_CONFIG), redis_url=dead_redis, transport=transport, wait=False
    )
    with grpc.insecure_channel(server.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:  # /healthcheck stays 503: the store is down
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=AUTHZ_SERVICE))
            except grpc.RpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        wait_until(serving, 20, "gRPC health SERVING")
        answer = check(external_auth_pb2_grpc.AuthorizationStub(channel), check_request("down"))
    assert answer.status.code == UNAVAILABLE
    assert answer.WhichOneof("http_response") == "denied_response"
    assert answer.denied_response.status.code == 503
