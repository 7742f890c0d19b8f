"""TLS: gRPC over TLS and mTLS on both transports, and Redis over TLS from a rediss:// URL.
Certificates come from openssl in a fixture: a CA, a server certificate for 127.0.0.1 and
localhost, and a client certificate."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from ratelimitd.algorithms import Hit
from ratelimitd.model.rules import Limit, Unit
from ratelimitd.storage.factory import build_store
from tests.conftest import RatelimitdFactory, free_port, run_serve, start_redis

CONFIG = (
    "domain: t\ndescriptors: [{key: tenant, rate_limit: {unit: minute, requests_per_unit: 5}}]\n"
)
REQUEST = rls_pb2.RateLimitRequest(
    domain="t",
    descriptors=[
        ratelimit_pb2.RateLimitDescriptor(
            entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key="tenant", value="a")]
        )
    ],
)


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", f"{name}.pem",
                cwd=d)  # fmt: skip
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key")


def call(target: str, credentials: grpc.ChannelCredentials | None) -> rls_pb2.RateLimitResponse:
    channel = (
        grpc.insecure_channel(target)
        if credentials is None
        else grpc.secure_channel(target, credentials)
    )
    with channel:
        answer: rls_pb2.RateLimitResponse = rls_pb2_grpc.RateLimitServiceStub(
            channel
        ).ShouldRateLimit(REQUEST, timeout=5)
        return answer


@pytest.mark.parametrize("transport", ["grpc", "asgi"])
def test_tls_and_mtls(
    ratelimitd: RatelimitdFactory,
    write_config: Callable[..., Path],
    pki: Pki,
    transport: str,
) -> None:
    config = write_config(CONFIG)
    tls = ("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key))
    server = ratelimitd(config, *tls, transport=transport)
    trusting = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    assert call(server.grpc_target, trusting).overall_code == rls_pb2.RateLimitResponse.OK
    with pytest.raises(grpc.RpcError):
        call(server.grpc_target, None)  # plaintext is not served

    mutual = ratelimitd(config, *tls, "--tls-client-ca", str(pki.ca), transport=transport)
    with pytest.raises(grpc.RpcError):
        call(mutual.grpc_target, trusting)  # no client certificate
    identified = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=pki.client_key.read_bytes(),
        certificate_chain=pki.client_cert.read_bytes(),
    )
    assert call(mutual.grpc_target, identified).overall_code == rls_pb2.RateLimitResponse.OK


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--tls-cert", "cert.pem"), "go together"),
        (("--tls-client-ca", "ca.pem"), "needs --tls-cert"),
        (("--tls-cert", "nope.pem", "--tls-key", "nope.key"), "not found"),
    ],
)
def test_incomplete_tls_settings_are_refused(
    write_config: Callable[..., Path], flags: tuple[str, ...], message: str
) -> None:
    result = run_serve("--config", str(write_config(CONFIG)), *flags)
    assert result.returncode == 1
    assert message in result.stderr


def test_redis_over_tls_from_the_url(
    pki: Pki, tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    tls_port = free_port()
    redis = start_redis(
        tmp_path,
        options={
            "tls-port": str(tls_port),
            "tls-cert-file": str(pki.server_cert),
            "tls-key-file": str(pki.server_key),
            "tls-ca-cert-file": str(pki.ca),
            "tls-auth-clients": "no",
        },
    )
    try:
        url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={pki.ca}"
        store = build_store(url, timeout=5)
        limit = Limit("token_bucket", 5, Unit.MINUTE, 5)
        outcome = loop.run_until_complete(store.apply([Hit("k", limit, 1)]))
        assert outcome[0].remaining == 4
        loop.run_until_complete(store.close())
        # Read back over the same server's plaintext port: the counter was written over TLS.
        assert redis.client().get("k") is not None
    finally:
        redis.process.terminate()
        redis.process.wait(timeout=10)
