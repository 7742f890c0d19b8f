"""What `serve` says when it starts: one `serving` event with all a reader needs, each worker's
first config load as an event like a reload, and the store when it cannot be reached; and the
errors of a user's first minutes, each one line naming the flag, the address and the cause."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ratelimitd.app.ports import bind_error
from ratelimitd.config.loader import load_config
from tests.conftest import (
    REPO,
    STARTUP_TIMEOUT_S,
    RatelimitdFactory,
    RedisServer,
    clean_environment,
    free_port,
    log_records,
    run_serve,
    start_redis,
    wait_until,
)

PASSWORD = "s3cret-pw"
FIRST = "domain: first\ndescriptors: [{key: k, rate_limit: {unit: minute, requests_per_unit: 1}}]\n"
SECOND = """domain: second
descriptors:
  - {key: k, rate_limit: {unit: second, requests_per_unit: 2}}
  - {key: j, rate_limit: {unit: second, requests_per_unit: 3}}
"""


def with_password(redis_server: RedisServer) -> str:
    """The server's URL with PASSWORD, which it now requires."""
    redis_server.client().config_set("requirepass", PASSWORD)
    return f"redis://:{PASSWORD}@127.0.0.1:{redis_server.port}/0"


@pytest.mark.parametrize(("transport", "workers"), [("grpc", 1), ("asgi", 2)])
def test_one_serving_event_tells_what_started(
    ratelimitd: RatelimitdFactory,
    own_redis: RedisServer,
    tmp_path: Path,
    transport: str,
    workers: int,
) -> None:
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text(FIRST)
    second.write_text(SECOND)
    server = ratelimitd(
        [first, second],
        "--default-algorithm",
        "gcra",
        "--failure-mode",
        "deny",
        redis_url=with_password(own_redis),
        transport=transport,
        workers=workers,
    )
    [serving] = server.events("serving")  # the factory waited for it
    expected = {
        "level": "info",
        "pid": server.process.pid,
        "transport": transport,
        "grpc_addr": server.grpc_target,
        "http_addr": f"127.0.0.1:{server.http_port}",
        "workers": workers,
        "files": [str(first), str(second)],
        "domains": ["first", "second"],
        "rules": 3,
        "store": f"redis://***@127.0.0.1:{own_redis.port}/0",
        "default_algorithm": "gcra",
        "failure_mode": "deny",
    }
    assert {name: serving.get(name) for name in expected} == expected
    assert PASSWORD not in server.logs()

    # Each worker's first load is an event with the fields of every reload.
    worker_pids = sorted(r["pid"] for r in server.events("worker_serving")) or [serving["pid"]]
    assert len(worker_pids) == workers
    loaded = server.events("config_loaded")
    assert sorted(record["pid"] for record in loaded) == worker_pids
    digest = load_config([first, second]).digest
    assert all((r["domains"], r["rules"], r["digest"]) == (2, 3, digest) for r in loaded)
    server.process.send_signal(signal.SIGHUP)
    wait_until(
        lambda: len(server.events("config_reloaded")) == workers, 10, "every worker's reload"
    )
    assert {*server.events("config_reloaded")[0]} == {*loaded[0]}


def test_an_unreachable_store_is_reported_at_once_and_again_when_it_is_back(
    ratelimitd: RatelimitdFactory, tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    port = free_port()
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    shown = f"redis://***@127.0.0.1:{port}/0"
    server = ratelimitd(write_config(FIRST), redis_url=url, wait=False)
    wait_until(lambda: bool(server.events("serving")), STARTUP_TIMEOUT_S, "the serving event")
    [unreachable] = server.events("store_unreachable")
    assert (unreachable["level"], unreachable["store"]) == ("warning", shown)
    records = log_records(server.logs())
    assert records.index(unreachable) < records.index(server.events("serving")[0])  # at once
    assert server.http("/healthcheck") == (503, "store unavailable\n")

    redis_server = start_redis(tmp_path, port=port)
    try:
        with_password(redis_server)
        wait_until(lambda: bool(server.events("store_reachable")), 10, "the store to be back")
        [reachable] = server.events("store_reachable")
        assert (reachable["level"], reachable["store"]) == ("info", shown)
        assert server.http("/healthcheck")[0] == 200
    finally:
        redis_server.process.terminate()
        redis_server.process.wait(timeout=10)
    assert PASSWORD not in server.logs()


@pytest.mark.parametrize(
    ("flag", "value", "cause"),
    [
        ("--grpc-addr", "8081", "'8081' is not HOST:PORT"),
        ("--http-addr", "127.0.0.1:99999", "'127.0.0.1:99999': port 99999 is out of range"),
    ],
)
def test_a_malformed_address_is_a_usage_error_naming_the_flag(
    write_config: Callable[..., Path], flag: str, value: str, cause: str
) -> None:
    result = run_serve("--config", str(write_config(FIRST)), flag, value)
    assert result.returncode == 2
    usage, error = result.stderr.splitlines()
    assert usage == "usage: ratelimitd serve --config PATH [options]"
    assert error.startswith(f"ratelimitd serve: error: argument {flag}: {cause}")


@pytest.mark.parametrize("transport", ["grpc", "asgi"])
@pytest.mark.parametrize("flag", ["--grpc-addr", "--http-addr"])
def test_an_address_in_use_is_one_line_naming_the_flag_the_address_and_the_cause(
    write_config: Callable[..., Path], transport: str, flag: str
) -> None:
    addresses = {name: f"127.0.0.1:{free_port()}" for name in ("--grpc-addr", "--http-addr")}
    with socket.socket() as taken:  # an ordinary listener: no SO_REUSEPORT
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addresses[flag] = f"127.0.0.1:{taken.getsockname()[1]}"
        flags = [part for pair in addresses.items() for part in pair]
        result = run_serve("--config", str(write_config(FIRST)), "--transport", transport, *flags)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()  # no worker started, so no Envoy output either
    [record] = log_records(line)
    assert {name: record[name] for name in ("level", "event", "flag", "address", "error")} == {
        "level": "error",
        "event": "listen_failed",
        "flag": flag,
        "address": addresses[flag],
        "error": "Address already in use",
    }


def test_an_address_shared_through_so_reuseport_is_free_and_any_other_is_not() -> None:
    with socket.socket() as shared, socket.socket() as held:
        shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as another worker's
        for sock in (shared, held):
            sock.bind(("127.0.0.1", 0))
            sock.listen()
        assert bind_error(f"127.0.0.1:{shared.getsockname()[1]}") is None
        assert bind_error(f"127.0.0.1:{held.getsockname()[1]}") == "Address already in use"


# `serve` failing in a way no check foresaw.
FAILING_SERVE = """
import sys
import ratelimitd.app.server

async def fail(settings):
    raise RuntimeError("unforeseen")

ratelimitd.app.server.serve = fail
from ratelimitd.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("level", ["info", "debug"])
def test_an_unforeseen_error_is_one_line_with_a_traceback_only_when_debugging(
    write_config: Callable[..., Path], level: str
) -> None:
    config = str(write_config(FIRST))
    result = subprocess.run(
        [sys.executable, "-c", FAILING_SERVE, "serve", "--config", config, "--log-level", level],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=clean_environment(),
        timeout=30,
    )
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    [record] = log_records(line)
    assert (record["event"], record["error"]) == ("serve_failed", "RuntimeError: unforeseen")
    assert ("Traceback" in line) == (level == "debug")
