"""Real Envoy processes for the end-to-end tests: started from a bootstrap document, ready
once their admin /ready answers, spoken to over HTTP/1.1, stopped at teardown."""

from __future__ import annotations

import http.client
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from demos.local import HOST
from tests.conftest import STARTUP_TIMEOUT_S, wait_until

ENVOY = Path(sys.prefix) / "bin" / "envoy"


@dataclass
class Reply:
    """An HTTP response as the client got it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class Envoy:
    """A running Envoy: its ingress port, admin port and process."""

    port: int
    admin_port: int
    process: subprocess.Popen[bytes]

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            return Reply(response.status, response.getheaders(), response.read())
        finally:
            connection.close()

    def get(self, path: str = "/", **headers: str) -> Reply:
        """GET `path`; header names in Python spelling (x_tenant_id is x-tenant-id)."""
        return self.request(
            "GET", path, headers={k.replace("_", "-"): v for k, v in headers.items()}
        )

    def stat(self, name: str) -> int:
        """The value of counter or gauge `name` (0 while Envoy has not created it)."""
        connection = http.client.HTTPConnection(HOST, self.admin_port, timeout=10)
        try:
            connection.request("GET", "/stats?filter=" + quote(f"^{re.escape(name)}$"))
            lines = connection.getresponse().read().decode().splitlines()
        finally:
            connection.close()
        return sum(int(line.rpartition(":")[2]) for line in lines)


def run_envoy(
    tmp: Path, doc: dict[str, Any], started: list[Envoy], *, concurrency: int | None = None
) -> Envoy:
    """Envoy running bootstrap `doc` (a local one: its ingress listener first), once ready,
    with `concurrency` worker threads (default: one per CPU); stopped at teardown through
    `started` (conftest's `proxies` fixture)."""
    port = doc["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
    admin_port = doc["admin"]["address"]["socket_address"]["port_value"]
    config = tmp / f"envoy-{port}.yaml"
    config.write_text(yaml.safe_dump(doc))
    log_path = tmp / f"envoy-{port}.log"
    with log_path.open("wb") as log:
        command = [str(ENVOY), "-c", str(config), "--disable-hot-restart", "-l", "warning"]
        if concurrency is not None:
            command += ["--concurrency", str(concurrency)]
        process = subprocess.Popen(command, stdout=log, stderr=log)
    envoy = Envoy(port, admin_port, process)
    started.append(envoy)

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"envoy exited: {log_path.read_text()}")
        try:
            connection = http.client.HTTPConnection(HOST, admin_port, timeout=1)
            connection.request("GET", "/ready")
            return connection.getresponse().status == 200
        except OSError:
            return False

    wait_until(ready, STARTUP_TIMEOUT_S, "envoy /ready")
    return envoy


def assert_envoy_accepts(path: Path) -> None:
    """Envoy's own validation (`--mode validate`) passes on the bootstrap at `path`."""
    result = subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr
