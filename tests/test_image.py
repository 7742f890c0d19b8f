"""The image, built from the Dockerfile with buildah: no Docker daemon, no registry.

The base image is RATELIMITD_TEST_BASE_IMAGE when set (e.g. python:3.11-slim-bookworm where a
registry is reachable), else a stand-in made from Debian bookworm packages by
scripts/bookworm_python_image.sh (kept in buildah's store, so made once per machine). The
build's `pip install .` needs the package index. buildah runs with the vfs storage driver and
chroot isolation, which need root and no kernel features a sandbox may lack; the container
shares the host's network, so the test reaches its ports on 127.0.0.1.

Marked slow (`pytest -m slow tests/test_image.py`): a build takes minutes (the stand-in base
another 2.5 the first time) and needs the package index, so the default run and CI leave it
out. Without root, buildah or debootstrap the tests skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, free_port, wait_until

BUILDAH = ("buildah", "--storage-driver", "vfs")
# Per test run: runs on one machine share buildah's store, and each removes its own image.
IMAGE = f"localhost/ratelimitd:test-{os.getpid()}"
BASE_SCRIPT = REPO / "scripts" / "bookworm_python_image.sh"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
BUILD_TIMEOUT_S = 1200


pytestmark = pytest.mark.slow


def require(ready: bool, missing: str) -> None:
    """Skip the test when `ready` is false."""
    if not ready:
        pytest.skip(missing)


def buildah(*args: str, timeout: float = 120) -> str:
    """Run buildah on the vfs store; its stdout. Fails the test with buildah's stderr."""
    result = subprocess.run(
        [*BUILDAH, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"buildah {' '.join(args)}:\n{result.stderr}"
    return result.stdout


def base_image() -> str:
    """The image standing in for the Dockerfile's python:3.11-slim-bookworm."""
    chosen = os.environ.get("RATELIMITD_TEST_BASE_IMAGE")
    if chosen:
        return chosen
    require(shutil.which("debootstrap") is not None, "debootstrap not installed (Debian package)")
    result = subprocess.run(
        [str(BASE_SCRIPT)], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """The image built from the Dockerfile, removed afterwards (the base image stays)."""
    require(os.geteuid() == 0, "buildah with the vfs driver and chroot isolation needs root")
    require(shutil.which("buildah") is not None, "buildah not installed (Debian package)")
    # The build's pip trusts what this machine trusts (a TLS-inspecting proxy's CA included).
    ca = (
        ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
        if os.path.exists(HOST_CA_BUNDLE)
        else []
    )
    buildah(
        "bud",
        "--isolation=chroot",
        "--format=docker",  # the OCI format has no HEALTHCHECK
        "--pull=missing",
        *ca,
        f"--build-arg=PYTHON_IMAGE={base_image()}",
        f"--tag={IMAGE}",
        str(REPO),
        timeout=BUILD_TIMEOUT_S,
    )
    yield IMAGE
    buildah("rmi", IMAGE)


@pytest.fixture
def container(image: str) -> Iterator[str]:
    """A working container of the image, with examples/ratelimit.yaml as its config."""
    name = buildah("from", image).strip()
    buildah("copy", name, str(REPO / "examples" / "ratelimit.yaml"), "/etc/ratelimitd/")
    yield name
    buildah("rm", name)


def run_in(container: str, *command: str, env: dict[str, str] | None = None) -> str:
    """Run `command` in `container` as the image's user; its stdout."""
    settings = [f"--env={k}={v}" for k, v in (env or {}).items()]
    return buildah("run", "--isolation=chroot", *settings, container, "--", *command)


def docker_config(image: str) -> dict[str, Any]:
    """The image's configuration, in the Docker format it was built in."""
    config: dict[str, Any] = json.loads(buildah("inspect", "--type=image", image))["Docker"][
        "config"
    ]
    return config


def test_built_image_runs_ratelimitd_as_a_fixed_non_root_uid(image: str) -> None:
    config = docker_config(image)
    assert config["Entrypoint"] == ["ratelimitd"]
    assert config["Cmd"] == ["serve"]
    assert config["User"] == "10001:10001"
    assert set(config["ExposedPorts"]) == {"8080/tcp", "8081/tcp"}
    assert "RATELIMITD_CONFIG=/etc/ratelimitd" in config["Env"]
    assert config["Healthcheck"]["Test"][0] == "CMD"


def test_built_image_checks_its_mounted_config(container: str) -> None:
    assert run_in(container, "id", "-u") == "10001\n"
    assert run_in(container, "ratelimitd", "check", "/etc/ratelimitd") == "ok: /etc/ratelimitd\n"


def test_built_image_serves_and_passes_its_healthcheck(
    image: str, container: str, tmp_path: Path
) -> None:
    grpc_port, http_port = free_port(), free_port()
    env = {
        "RATELIMITD_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
        "RATELIMITD_HTTP_ADDR": f"127.0.0.1:{http_port}",
    }
    settings = [f"--env={k}={v}" for k, v in env.items()]
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        serve = subprocess.Popen(
            [
                *BUILDAH,
                "run",
                "--isolation=chroot",
                *settings,
                container,
                "--",
                "ratelimitd",
                "serve",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # so that SIGTERM reaches ratelimitd, not only buildah
        )
    try:
        wait_until(lambda: healthy(http_port) or serve.poll() is not None, 60, "/healthcheck")
        assert serve.poll() is None, log.read_text()
        healthcheck = docker_config(image)["Healthcheck"]["Test"][1:]
        run_in(container, *healthcheck, env=env)  # exits 0: healthy
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=60)
    assert '"event": "serving"' in log.read_text()


def healthy(port: int) -> bool:
    """Whether ratelimitd's /healthcheck on `port` answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, ConnectionError):
        return False
