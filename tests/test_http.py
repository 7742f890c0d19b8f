"""The HTTP endpoints of a running server: readiness, unknown paths and methods."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import RatelimitdFactory, free_port, wait_until

CONFIG = "domain: d\ndescriptors: [{key: k, rate_limit: {unit: second, requests_per_unit: 1}}]\n"


def request(port: int, method: str, path: str) -> tuple[int, str, dict[str, str]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read().decode(), dict(response.getheaders())
    finally:
        connection.close()


def test_healthcheck_unknown_path_and_wrong_method(
    ratelimitd: RatelimitdFactory, write_config: Callable[..., Path]
) -> None:
    server = ratelimitd(write_config(CONFIG))
    assert request(server.http_port, "GET", "/healthcheck")[:2] == (200, "OK\n")
    status, body, _ = request(server.http_port, "GET", "/nope")
    assert status == 404
    assert "/nope" in body
    status, _, fields = request(server.http_port, "POST", "/healthcheck")
    assert status == 405
    assert fields["Allow"] == "GET"


def test_healthcheck_is_503_while_redis_is_unreachable(
    ratelimitd: RatelimitdFactory, write_config: Callable[..., Path]
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    server = ratelimitd(write_config(CONFIG), redis_url=dead_redis, wait=False)

    def answers() -> bool:
        try:
            return server.http("/healthcheck")[0] != 0
        except OSError:
            return False

    wait_until(answers, 20, "the HTTP port")
    assert server.http("/healthcheck") == (503, "store unavailable\n")


JSON_CONFIG = """
domain: web
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 2, name: per_tenant}
  - key: internal
    rate_limit: {unlimited: true}
"""


def post(port: int, path: str, body: bytes) -> tuple[int, str, dict[str, str]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read().decode(), dict(response.getheaders())
    finally:
        connection.close()


def test_json_endpoint_answers_200_then_429(
    ratelimitd: RatelimitdFactory, write_config: Callable[..., Path]
) -> None:
    server = ratelimitd(write_config(JSON_CONFIG))
    request = json.dumps(
        {"domain": "web", "descriptors": [{"entries": [{"key": "tenant", "value": "a"}]}]}
    ).encode()
    answers = [post(server.http_port, "/json", request) for _ in range(3)]
    assert [status for status, _, _ in answers] == [200, 200, 429]
    assert answers[0][2]["Content-Type"] == "application/json"
    first, last = json.loads(answers[0][1]), json.loads(answers[2][1])
    assert first["overallCode"] == "OK"
    assert first["statuses"][0]["limitRemaining"] == 1
    assert first["statuses"][0]["currentLimit"] == {
        "requestsPerUnit": 2,
        "unit": "MINUTE",
        "name": "per_tenant",
    }
    assert last["overallCode"] == "OVER_LIMIT"
    assert {"key": "Retry-After", "value": "30"} in last["responseHeadersToAdd"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "invalid RateLimitRequest JSON"),
        (b'{"domain": "web", "descriptorz": []}', "descriptorz"),
        (b'{"domain": "web", "hitsAddend": -1}', "invalid RateLimitRequest JSON"),
        (b'{"domain": "", "descriptors": [{"entries": [{"key": "a"}]}]}', "domain"),
        (b'{"domain": "web", "descriptors": []}', "descriptor"),
    ],
)
def test_json_endpoint_rejects_bad_requests_with_400(
    ratelimitd: RatelimitdFactory, write_config: Callable[..., Path], body: bytes, message: str
) -> None:
    server = ratelimitd(write_config(JSON_CONFIG))
    status, text, _ = post(server.http_port, "/json", body)
    assert status == 400
    assert message in text


def test_rlconfig_lists_every_rule_with_its_source(
    ratelimitd: RatelimitdFactory, write_config: Callable[..., Path]
) -> None:
    path = write_config(JSON_CONFIG)
    server = ratelimitd(path)
    status, body = server.http("/rlconfig")
    assert status == 200
    assert body.splitlines() == [
        "web.tenant: algorithm=token_bucket unit=MINUTE requests_per_unit=2 burst=2"
        f" name=per_tenant shadow_mode=false failure_mode=allow source={path}:4",
        f"web.internal: unlimited shadow_mode=false failure_mode=allow source={path}:6",
    ]


def test_the_asgi_grpc_port_does_not_show_the_config(
    ratelimitd: RatelimitdFactory, write_config: Callable[..., Path]
) -> None:
    server = ratelimitd(write_config(JSON_CONFIG), transport="asgi")
    assert request(server.grpc_port, "GET", "/rlconfig")[0] == 404
    assert request(server.grpc_port, "GET", "/healthcheck")[:2] == (200, "OK\n")
    assert request(server.http_port, "GET", "/rlconfig")[0] == 200
