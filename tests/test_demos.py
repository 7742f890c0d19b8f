"""`make demo`, `make demo-ext-authz` and `make demo-llm-quota` as a newcomer runs them: each
target in the background until its ready line, then every curl command it printed, sent as
printed (parsed back from the output), checked against the answer printed under it; then
SIGTERM, after which none of the processes it started may be left.

make runs with this virtualenv (VENV, BIN) and without remaking it (-o): the targets' own
dependency on the dev extras is what installs Envoy, which this suite already has."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.procs import descendants
from demos.runner import READY
from tests.conftest import REPO, STARTUP_TIMEOUT_S, free_port, wait_until

VENV = Path(sys.prefix)
STOP_TIMEOUT_S = 30.0
ANSWER = re.compile(
    r"-> (?:(?P<times>\d+) times: )?HTTP (?P<status>\d{3})"
    r"(?: with (?P<headers>[\w-]+(?:, [\w-]+)*))?(?: \(.*\))?$"
)


@dataclass(frozen=True)
class Printed:
    """A curl command as printed, and the answer printed under it."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None
    times: int
    status: int
    expect_headers: tuple[str, ...]


@dataclass
class Demo:
    """A `make demo*` running in its own session, with the lines it printed so far."""

    make: subprocess.Popen[str]
    lines: queue.Queue[str | None]
    output: list[str]

    def until(self, wanted: str) -> list[str]:
        """Everything printed up to and including the line `wanted`."""
        while wanted not in self.output:
            try:
                line = self.lines.get(timeout=STARTUP_TIMEOUT_S)
            except queue.Empty:
                pytest.fail(f"no {wanted!r} within {STARTUP_TIMEOUT_S}s:\n" + self.text())
            if line is None:
                pytest.fail(f"make exited ({self.make.wait()}) before {wanted!r}:\n" + self.text())
            self.output.append(line)
        return self.output

    def text(self) -> str:
        return "\n".join(self.output)


def start_demo(target: str, port: int, path: str) -> Demo:
    """`make TARGET` in the background (its own session, so a signal reaches make and the
    runner, not pytest), Envoy on `port`, PATH as given."""
    make = shutil.which("make")
    assert make is not None, "make is not on PATH"
    argv = [make, "-s", "-o", f"{VENV}/.dev", target, f"VENV={VENV}", f"BIN={VENV}/bin"]
    argv += [f"DEMO_PORT={port}", f"DEMO_ADMIN_PORT={free_port()}"]
    process = subprocess.Popen(
        argv,
        cwd=REPO,
        env={**os.environ, "PATH": path},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return Demo(process, lines, [])


@pytest.fixture
def demo() -> Iterator[list[Demo]]:
    """Demos started by a test; any still running at teardown is killed with its children."""
    started: list[Demo] = []
    yield started
    for each in started:
        if each.make.poll() is None:
            tree = descendants(each.make.pid)
            for pid in [each.make.pid, *tree]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            each.make.wait()


def printed_tries(lines: list[str]) -> list[Printed]:
    """Each `curl` line with the `->` line under it."""
    tries = []
    for command, answer in itertools.pairwise(lines):
        if not command.startswith("  curl "):
            continue
        found = ANSWER.fullmatch(answer.strip())
        assert found, f"no answer under {command!r}: {answer!r}"
        words = shlex.split(command)
        headers, body = {}, None
        for flag, value in itertools.pairwise(words):
            if flag == "-H":
                name, _, text = value.partition(": ")
                headers[name] = text
            elif flag == "-d":
                body = value.encode()
        expect = found["headers"]
        tries.append(
            Printed(
                "POST" if body is not None else "GET",
                words[-1],
                headers,
                body,
                int(found["times"] or 1),
                int(found["status"]),
                tuple(expect.split(", ")) if expect else (),
            )
        )
    return tries


def send(each: Printed) -> http.client.HTTPResponse:
    """One request as the curl command sends it."""
    url = urlsplit(each.url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    connection.request(each.method, url.path, body=each.body, headers=each.headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def ratelimitd_calls(lines: list[str]) -> int:
    """How many calls the demo's ratelimitd has answered (its /metrics)."""
    (http_url,) = [m[1] for line in lines if (m := re.search(r", HTTP (http://\S+)", line))]
    url = urlsplit(http_url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    connection.request("GET", "/metrics")
    body = connection.getresponse().read().decode()
    connection.close()
    return sum(
        int(sample.value)
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "ratelimitd_requests_total"
    )


def wait_for_calls(lines: list[str], calls: int) -> None:
    """Wait until the demo's ratelimitd has answered `calls` calls."""
    wait_until(lambda: ratelimitd_calls(lines) >= calls, 10, f"ratelimitd's call #{calls}")


def alive(pids: list[int]) -> list[int]:
    """Those of `pids` still running (or not yet collected)."""
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


def run_printed(lines: list[str]) -> None:
    """Send every printed command as many times as printed, checking each answer."""
    tries = printed_tries(lines)
    assert tries, "no curl commands printed"
    calls = 0
    for each in tries:
        for n in range(each.times):
            response = send(each)
            what = f"{each.method} {each.url} {each.headers} #{n + 1}"
            assert response.status == each.status, what
            for name in each.expect_headers:
                assert response.getheader(name), f"{what}: no {name}"
            if response.status != 400:
                calls += 1
            if response.getheader("x-tokens-used"):
                # The charge is sent after the answer: wait until ratelimitd has it before the
                # next request, as someone typing the next command would.
                calls += 1
                wait_for_calls(lines, calls)


@pytest.mark.parametrize(
    ("target", "store"),
    # llm-quota on the memory store: no redis-server on PATH (only this virtualenv's bin).
    [("demo", "redis"), ("demo-ext-authz", "redis"), ("demo-llm-quota", "memory")],
)
def test_demo_answers_as_printed_then_stops_everything(
    demo: list[Demo], target: str, store: str
) -> None:
    path = os.environ["PATH"] if store == "redis" else str(VENV / "bin")
    port = free_port()
    started = start_demo(target, port, path)
    demo.append(started)
    lines = started.until(READY)
    assert f"Envoy listens on http://127.0.0.1:{port}" in lines
    said = "store:      redis-server at redis://" if store == "redis" else "store:      memory ("
    assert any(line.startswith(said) for line in lines), started.text()
    children = descendants(started.make.pid)  # the runner, the store, ratelimitd, Envoy
    names = [Path(f"/proc/{pid}/comm").read_text().strip() for pid in children]
    assert "envoy" in names
    assert ("redis-server" in names) == (store == "redis")
    assert len(children) == (4 if store == "redis" else 3), names

    if target == "demo":  # envoy/ratelimitd.yaml: the 6th request of t1 in a minute gets 429
        t1 = [p for p in printed_tries(lines) if p.headers == {"x-tenant-id": "t1"}]
        assert [(p.times, p.status, p.expect_headers) for p in t1] == [
            (5, 200, ()),
            (1, 429, ("retry-after",)),
        ]
    run_printed(lines)

    os.killpg(started.make.pid, signal.SIGTERM)
    started.make.wait(timeout=STOP_TIMEOUT_S)
    wait_until(lambda: not alive(children), STOP_TIMEOUT_S, f"{children} ({names}) to exit")
    assert "stopped" in started.until("stopped")
