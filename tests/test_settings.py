"""Flags and their environment variables; `serve` refusing a bad config."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from ratelimitd.app.settings import (
    Settings,
    Transport,
    add_serve_arguments,
    settings_from,
    settings_from_environment,
    split_address,
)
from ratelimitd.cli import build_parser
from ratelimitd.core.headers import HeaderMode
from ratelimitd.core.problem import BodyMode
from ratelimitd.model.rules import FailureMode
from ratelimitd.observe.tracing import Exporter
from ratelimitd.storage.factory import redact
from tests.conftest import run_serve


def parse(argv: list[str], environ: dict[str, str] | None = None) -> Settings:
    env = environ or {}
    return settings_from(build_parser(env).parse_args(["serve", *argv]), env)


def test_defaults() -> None:
    settings = parse(["--config", "a.yaml"])
    assert settings == Settings(config=("a.yaml",))
    assert settings.transport is Transport.ASGI
    assert (settings.grpc_addr, settings.http_addr) == ("0.0.0.0:8081", "127.0.0.1:8080")
    assert settings.redis_url is None


def test_every_flag_reads_its_environment_variable() -> None:
    environ = {
        "RATELIMITD_CONFIG": os.pathsep.join(["a.yaml", "dir"]),
        "RATELIMITD_GRPC_ADDR": "127.0.0.1:9001",
        "RATELIMITD_HTTP_ADDR": "127.0.0.1:9002",
        "RATELIMITD_REDIS_URL": "redis://r:6379/1",
        "RATELIMITD_REDIS_TIMEOUT": "0.2",
        "RATELIMITD_RESPONSE_HEADERS": "ietf",
        "RATELIMITD_OVER_LIMIT_BODY": "problem-json",
        "RATELIMITD_FAILURE_MODE": "deny",
        "RATELIMITD_TLS_CERT": "c.pem",
        "RATELIMITD_TLS_KEY": "k.pem",
        "RATELIMITD_TLS_CLIENT_CA": "ca.pem",
        "RATELIMITD_BREAKER_THRESHOLD": "3",
        "RATELIMITD_BREAKER_COOLDOWN": "2.5",
        "RATELIMITD_DEFAULT_ALGORITHM": "gcra",
        "RATELIMITD_SHADOW_MODE": "true",
        "RATELIMITD_NEAR_LIMIT_RATIO": "0.5",
        "RATELIMITD_KEY_PREFIX": "x:",
        "RATELIMITD_QUOTA_MODE": "true",
        "RATELIMITD_DRAIN_TIMEOUT": "9",
        "RATELIMITD_CONFIG_POLL_INTERVAL": "0.25",
        "RATELIMITD_LOG_LEVEL": "debug",
        "RATELIMITD_LOG_FORMAT": "console",
        "RATELIMITD_TRACING": "console",
        "RATELIMITD_TRANSPORT": "asgi",
        "RATELIMITD_WORKERS": "3",
        "RATELIMITD_LOCAL_CACHE_SIZE": "0",
        "RATELIMITD_MEMORY_MAX_KEYS": "1000",
        "RATELIMITD_AUTHZ_DOMAIN": "edge",
        "RATELIMITD_MAX_REQUEST_BYTES": "4096",
        "RATELIMITD_MAX_DESCRIPTORS": "8",
        "RATELIMITD_MAX_ENTRIES": "4",
        "RATELIMITD_MAX_KEY_LENGTH": "32",
        "RATELIMITD_MAX_VALUE_LENGTH": "64",
        "RATELIMITD_MAX_STREAMS_PER_CONNECTION": "8",
        "RATELIMITD_RESPONSE_DYNAMIC_METADATA": "true",
    }
    assert parse([], environ) == Settings(
        config=("a.yaml", "dir"),
        grpc_addr="127.0.0.1:9001",
        http_addr="127.0.0.1:9002",
        redis_url="redis://r:6379/1",
        redis_timeout=0.2,
        response_headers=HeaderMode.IETF,
        over_limit_body=BodyMode.PROBLEM_JSON,
        failure_mode=FailureMode.DENY,
        tls_cert="c.pem",
        tls_key="k.pem",
        tls_client_ca="ca.pem",
        breaker_threshold=3,
        breaker_cooldown=2.5,
        default_algorithm="gcra",
        shadow_mode=True,
        quota_mode=True,
        near_limit_ratio=0.5,
        key_prefix="x:",
        drain_timeout=9.0,
        config_poll_interval=0.25,
        log_level="debug",
        log_format="console",
        tracing=Exporter.CONSOLE,
        transport=Transport.ASGI,
        workers=3,
        local_cache_size=0,
        memory_max_keys=1000,
        authz_domain="edge",
        max_request_bytes=4096,
        max_descriptors=8,
        max_entries=4,
        max_key_length=32,
        max_value_length=64,
        max_streams_per_connection=8,
        response_dynamic_metadata=True,
    )
    assert set(add_serve_arguments(argparse.ArgumentParser(), {})) == set(environ)


def test_flags_win_over_the_environment() -> None:
    settings = parse(
        ["--config", "b.yaml", "--grpc-addr", ":7000"],
        {"RATELIMITD_GRPC_ADDR": ":1", "RATELIMITD_CONFIG": "a.yaml"},
    )
    assert (settings.config, settings.grpc_addr) == (("b.yaml",), ":7000")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RATELIMITD_RESPONSE_HEADERS", "bogus"),
        ("RATELIMITD_REDIS_TIMEOUT", "-1"),
        ("RATELIMITD_FAILURE_MODE", "maybe"),
        ("RATELIMITD_KEY_PREFIX", "{tag}"),
        ("RATELIMITD_LOG_FORMAT", "xml"),
        ("RATELIMITD_DEFAULT_ALGORITHM", "leaky"),
        ("RATELIMITD_SHADOW_MODE", "maybe"),
        ("RATELIMITD_NEAR_LIMIT_RATIO", "1.5"),
        ("RATELIMITD_MAX_STREAMS_PER_CONNECTION", "0"),
        ("RATELIMITD_MAX_STREAMS_PER_CONNECTION", "2147483648"),
    ],
)
def test_bad_environment_values_are_refused(
    variable: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse(["--config", "a.yaml"], {variable: value})
    assert value in capsys.readouterr().err


def test_split_address() -> None:
    assert split_address("127.0.0.1:80") == ("127.0.0.1", 80)
    assert split_address("[::1]:80") == ("::1", 80)
    assert split_address(":80") == ("0.0.0.0", 80)
    with pytest.raises(ValueError, match="HOST:PORT"):
        split_address("nope")
    with pytest.raises(ValueError, match="out of range"):
        split_address("127.0.0.1:65536")


def test_serve_refuses_an_invalid_config(write_config: Callable[..., Path]) -> None:
    path = write_config("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight}\n")
    result = run_serve("--config", str(path))
    assert result.returncode == 1
    assert f"{path}:4: unknown unit 'fortnight'" in result.stderr


def test_shadow_mode_flag_turns_on_and_off() -> None:
    assert parse(["--config", "a", "--shadow-mode"]).shadow_mode is True
    on = {"RATELIMITD_SHADOW_MODE": "true"}
    assert parse(["--config", "a", "--no-shadow-mode"], on).shadow_mode is False


def test_settings_survive_the_trip_to_a_worker_through_the_environment() -> None:
    settings = parse(["--config", "a.yaml", "--config", "b", "--shadow-mode", "--workers", "2"])
    assert settings_from_environment(settings.to_environment()) == settings


def test_worker_count_defaults_to_cpus_with_redis_and_one_without() -> None:
    assert parse(["--config", "a"]).worker_count == 1
    assert parse(["--config", "a", "--redis-url", "redis://r/0"]).worker_count == os.cpu_count()
    assert parse(["--config", "a", "--workers", "3"]).worker_count == 3


def test_streams_per_connection_are_capped_only_when_asked() -> None:
    # A cap announced by the server refuses the calls a client sends on a new connection
    # before it learns the cap: never by default, whatever the worker count.
    redis = ["--config", "a", "--redis-url", "redis://r/0"]
    assert parse([*redis, "--workers", "2"]).max_streams_per_connection is None
    flag = ["--max-streams-per-connection", "100"]
    assert parse([*redis, "--workers", "2", *flag]).max_streams_per_connection == 100


def test_serve_refuses_a_bad_redis_url_once(write_config: Callable[..., Path]) -> None:
    path = write_config("domain: d\n")
    result = run_serve("--config", str(path), "--redis-url", "redis+nope://h:1", "--workers", "2")
    assert result.returncode == 1
    assert result.stderr.count("bad_redis_url") == 1


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:6379/0", "redis://***@h:6379/0"),
        ("redis://user:pw@h/1", "redis://***@h/1"),
        (
            "redis+sentinel://pw@s1:26379,s2:26379/main",
            "redis+sentinel://***@s1:26379,s2:26379/main",
        ),
        ("redis://h:6379/0", "redis://h:6379/0"),
    ],
)
def test_urls_are_logged_without_credentials(url: str, shown: str) -> None:
    assert redact(url) == shown
