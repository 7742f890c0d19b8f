"""Live config reload of a running server: every way a config changes on disk, SIGHUP, a bad
config kept out, counters of unchanged rules kept, both transports, several workers."""

from __future__ import annotations

import http.client
import json
import os
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ratelimitd.config import watch
from ratelimitd.config.loader import load_config
from ratelimitd.model.rules import Config, Defaults
from tests.conftest import STARTUP_TIMEOUT_S, Ratelimitd, RatelimitdFactory, wait_until

FAST_POLL = ("--config-poll-interval", "0.1")
NO_POLL = ("--config-poll-interval", "3600")  # only SIGHUP can reload
RELOAD_TIMEOUT_S = 10.0


def rules(domain: str = "app", a: int = 5, b: int = 5) -> str:
    """A config with two independent rules, `a` and `b`, both per minute."""
    return f"""domain: {domain}
descriptors:
  - key: a
    rate_limit: {{unit: minute, requests_per_unit: {a}}}
  - key: b
    rate_limit: {{unit: minute, requests_per_unit: {b}}}
"""


def decide(server: Ratelimitd, key: str, *, domain: str = "app", hits: int = 1) -> dict[str, Any]:
    """POST /json one descriptor [(key, v)]; `hits` 0 only looks. The request's only status."""
    body = {
        "domain": domain,
        "descriptors": [{"entries": [{"key": key, "value": "v"}], "hitsAddend": hits}],
    }
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=5)
    try:
        connection.request("POST", "/json", body=json.dumps(body))
        response = connection.getresponse()
        status: dict[str, Any] = json.loads(response.read())["statuses"][0]
        return status
    finally:
        connection.close()


def limit(server: Ratelimitd, key: str, domain: str = "app") -> int | None:
    """requests_per_unit of the rule the server applies to [(key, v)], None if none."""
    current = decide(server, key, domain=domain, hits=0).get("currentLimit")
    return None if current is None else int(current["requestsPerUnit"])


def wait_for_limit(server: Ratelimitd, key: str, expected: int | None, domain: str = "app") -> None:
    wait_until(
        lambda: limit(server, key, domain) == expected,
        RELOAD_TIMEOUT_S,
        f"{domain}.{key} to be limited to {expected}",
    )


def config_hashes(server: Ratelimitd) -> list[int]:
    """The ratelimitd_config_hash of every live worker, as the service's /metrics reports it."""
    status, body = server.http("/metrics")
    assert status == 200
    return sorted(
        int(sample.value)
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "ratelimitd_config_hash"
    )


def test_the_fingerprint_is_the_digest_of_what_loads_and_reads_only_changed_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "app.yaml").write_text(rules())
    (tmp_path / "other.yml").write_text(rules(domain="other"))
    hashed: list[bytes] = []

    def file_hash(data: bytes) -> bytes:
        hashed.append(data)
        return b""

    monkeypatch.setattr(watch, "file_hash", file_hash)
    fingerprint = watch.ConfigFingerprint([str(tmp_path)])
    first = fingerprint.digest()
    assert fingerprint.digest() == first
    assert len(hashed) == 4  # just written: their stat could hide a change, so read again
    monkeypatch.setattr(watch, "_RECENT_NS", 0)
    hashed.clear()
    fingerprint.digest()
    assert len(hashed) == 2
    assert fingerprint.digest() == first
    assert len(hashed) == 2  # unchanged: a stat each, no read
    (tmp_path / "other.yml").write_text(rules(domain="other", a=7))
    fingerprint.digest()
    assert hashed[2:] == [rules(domain="other", a=7).encode()]
    monkeypatch.undo()
    assert watch.ConfigFingerprint([str(tmp_path)]).digest() == load_config([tmp_path]).digest


def test_reloads_are_counted_and_a_bad_one_changes_nothing(
    tmp_path: Path, run: Callable[[Coroutine[Any, Any, bool]], bool]
) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(rules())
    first = load_config([path])
    applied: list[Config] = []
    reloader = watch.ConfigReloader([str(path)], Defaults(), first, applied.append, 3600)
    path.write_text("domain: [")
    assert not run(reloader.reload())
    assert (applied, reloader.state.digest) == ([], first.digest)
    path.write_text(rules(a=7))
    assert run(reloader.reload())
    [second] = applied
    assert reloader.state.digest == second.digest != first.digest
    assert reloader.state.loaded_at >= os.stat(path).st_mtime
    assert reloader.state.reloads == {"success": 1, "failure": 1}


def test_an_in_place_edit_changes_the_limit(ratelimitd: RatelimitdFactory, tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(rules(a=5))
    server = ratelimitd(path, *FAST_POLL)
    assert limit(server, "a") == 5
    with path.open("r+") as file:  # the same inode, rewritten
        file.write(rules(a=7))
    wait_for_limit(server, "a", 7)
    [reloaded] = server.events("config_reloaded")
    assert (reloaded["domains"], reloaded["rules"]) == (1, 2)


def test_an_atomic_rename_changes_the_limit(ratelimitd: RatelimitdFactory, tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(rules(a=5))
    server = ratelimitd(path, *FAST_POLL)
    staged = tmp_path / ".app.yaml.tmp"
    staged.write_text(rules(a=7))
    staged.replace(path)
    wait_for_limit(server, "a", 7)


def test_files_added_to_and_removed_from_a_directory(
    ratelimitd: RatelimitdFactory, tmp_path: Path
) -> None:
    (tmp_path / "app.yaml").write_text(rules())
    server = ratelimitd(tmp_path, *FAST_POLL)
    assert limit(server, "a", domain="other") is None
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "other.yaml").write_text(rules(domain="other", a=3))
    wait_for_limit(server, "a", 3, domain="other")
    (tmp_path / "nested" / "other.yaml").unlink()
    wait_for_limit(server, "a", None, domain="other")
    assert limit(server, "a") == 5


def test_a_configmap_symlink_swap_changes_the_limit(
    ratelimitd: RatelimitdFactory, tmp_path: Path
) -> None:
    # What the kubelet does: the files are symlinks through `..data`, which is swapped for a
    # link to a new timestamped directory in one rename.
    def publish(version: str, text: str) -> None:
        (tmp_path / version).mkdir()
        (tmp_path / version / "app.yaml").write_text(text)
        (tmp_path / "..data_tmp").symlink_to(version)
        (tmp_path / "..data_tmp").replace(tmp_path / "..data")

    publish("..2024_01_01", rules(a=5))
    (tmp_path / "app.yaml").symlink_to("..data/app.yaml")
    server = ratelimitd(tmp_path, *FAST_POLL)
    publish("..2024_01_02", rules(a=7))
    wait_for_limit(server, "a", 7)


@pytest.mark.parametrize("transport", ["grpc", "asgi"])
def test_sighup_reloads(ratelimitd: RatelimitdFactory, tmp_path: Path, transport: str) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(rules(a=5))
    server = ratelimitd(path, *NO_POLL, transport=transport)
    path.write_text(rules(a=7))
    server.process.send_signal(signal.SIGHUP)
    wait_for_limit(server, "a", 7)


def test_a_bad_config_is_logged_and_the_last_good_one_keeps_serving(
    ratelimitd: RatelimitdFactory, tmp_path: Path
) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(rules(a=5))
    server = ratelimitd(path, *FAST_POLL)
    path.write_text("domain: app\ndescriptors: [\n")
    wait_until(
        lambda: bool(server.events("config_reload_failed")), RELOAD_TIMEOUT_S, "a failed reload"
    )
    [failed] = server.events("config_reload_failed")
    [error] = failed["errors"]
    assert error.startswith(f"{path}:3: YAML syntax error")
    assert limit(server, "a") == 5
    assert decide(server, "a")["code"] == "OK"

    path.write_text(rules(a=7))  # fixed: taken at once
    wait_for_limit(server, "a", 7)
    assert len(server.events("config_reload_failed")) == 1  # not retried meanwhile


def test_an_unchanged_rule_keeps_its_counter_across_a_reload(
    ratelimitd: RatelimitdFactory, tmp_path: Path
) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(rules(a=5, b=5))
    server = ratelimitd(path, *FAST_POLL)
    assert [decide(server, "a")["limitRemaining"] for _ in range(3)] == [4, 3, 2]
    path.write_text(rules(a=5, b=9))
    wait_for_limit(server, "b", 9)
    assert decide(server, "a")["limitRemaining"] == 1


@pytest.mark.parametrize("transport", ["grpc", "asgi"])
def test_every_worker_reloads(
    ratelimitd: RatelimitdFactory, redis_url: str, tmp_path: Path, transport: str
) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(rules(a=5))
    server = ratelimitd(path, *FAST_POLL, redis_url=redis_url, transport=transport, workers=2)

    def pids(event: str) -> list[int]:
        return sorted(record["pid"] for record in server.events(event))

    wait_until(lambda: len(pids("worker_serving")) == 2, 20, "both workers serving")
    workers = pids("worker_serving")
    path.write_text(rules(a=1))
    wait_until(lambda: pids("config_reloaded") == workers, RELOAD_TIMEOUT_S, "both reloads")
    assert [decide(server, "a")["code"] for _ in range(4)] == ["OK"] + ["OVER_LIMIT"] * 3

    # The supervisor passes SIGHUP on: each worker reloads once more, with no file changed.
    os.kill(server.process.pid, signal.SIGHUP)
    wait_until(
        lambda: pids("config_reloaded") == sorted(workers * 2),
        RELOAD_TIMEOUT_S,
        "a second reload in each worker",
    )


@pytest.mark.parametrize("transport", ["grpc", "asgi"])
def test_a_sighup_right_after_start_reaches_every_worker(
    ratelimitd: RatelimitdFactory, redis_url: str, tmp_path: Path, transport: str
) -> None:
    # SIGHUPs sent once the first worker answers, while the supervisor may still be starting
    # the second, reach both: the one serving and the one to come.
    path = tmp_path / "app.yaml"
    for _ in range(2):
        path.write_text(rules(a=5))
        server = ratelimitd(
            path, *NO_POLL, redis_url=redis_url, transport=transport, workers=2, wait=False
        )
        wait_until(server.answers, STARTUP_TIMEOUT_S, "the first worker to answer")
        for a in (6, 7, 8):
            # Replaced whole, as config management does: the second worker may be reading
            # the file right now, and an in-place rewrite could show it an empty one.
            staged = tmp_path / "app.yaml.new"
            staged.write_text(rules(a=a))
            staged.replace(path)
            server.process.send_signal(signal.SIGHUP)
        # The number metrics.config_loaded makes of the digest.
        latest = int(load_config([path]).digest[:12], 16)
        wait_until(
            lambda: config_hashes(server) == [latest, latest],  # noqa: B023
            RELOAD_TIMEOUT_S,
            "both workers serving the latest config",
        )
        assert not server.events("worker_exited")
        assert server.stop() == 0
