"""Drop-in migration: envoyproxy/ratelimit's environment variables as aliases of ours.

Unit tests of the translation (pure functions of an environment), and a server started with
nothing but a reference deployment's environment, answering as one started with our flags.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from ratelimitd import cli
from ratelimitd.app.reference_env import VARIABLES, Translation, translate
from ratelimitd.app.settings import Settings, settings_from
from ratelimitd.cli import build_parser
from tests.conftest import RatelimitdFactory, RedisServer, free_port, wait_until

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cret/:@pw"


def serve(argv: list[str], environ: dict[str, str]) -> tuple[Settings, Translation]:
    """What `ratelimitd serve ARGV` would run with, as cli.main computes it."""
    reference = translate(environ)
    merged = {**reference.environ, **environ}
    args = build_parser(merged).parse_args(["serve", *argv])
    return settings_from(args, merged), reference


# -- mapping ------------------------------------------------------------------------------


def test_a_reference_deployment_maps_to_our_settings() -> None:
    environ = {
        "USE_STATSD": "false",
        "LOG_LEVEL": "WARN",
        "LOG_FORMAT": "json",
        "REDIS_SOCKET_TYPE": "tcp",
        "REDIS_URL": "redis.internal:6379",
        "RUNTIME_ROOT": "/data",
        "RUNTIME_SUBDIRECTORY": "ratelimit",
        "RUNTIME_WATCH_ROOT": "false",
        "GRPC_PORT": "8081",
        "PORT": "8080",
        "SHADOW_MODE": "T",
        "NEAR_LIMIT_RATIO": "0.9",
        "CACHE_KEY_PREFIX": "edge_",
        "LOCAL_CACHE_SIZE_IN_BYTES": "1048576",
    }
    settings, reference = serve([], environ)
    assert reference.errors == []
    assert settings == Settings(
        config=("/data/ratelimit/config",),
        grpc_addr="0.0.0.0:8081",
        http_addr="0.0.0.0:8080",  # the reference's: all interfaces
        redis_url="redis://redis.internal:6379",
        shadow_mode=True,
        near_limit_ratio=0.9,
        key_prefix="edge_",
        log_level="warning",
        log_format="json",
        local_cache_size=1048576 // 300,
    )
    note = reference.note(settings.to_environment())
    assert note["read"]["REDIS_URL"] == "RATELIMITD_REDIS_URL=redis://redis.internal:6379"
    assert note["read"]["RUNTIME_ROOT"] == "RATELIMITD_CONFIG=/data/ratelimit/config"
    assert set(note["accepted"]) == {"RUNTIME_WATCH_ROOT"}
    assert set(note["ignored"]) == {"USE_STATSD"}
    assert "overridden" not in note


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        ({"REDIS_URL": "r:6379"}, "redis://r:6379"),
        ({"REDIS_URL": "r:6379", "REDIS_TYPE": "SINGLE", "REDIS_AUTH": "pw"}, "redis://:pw@r:6379"),
        (
            {"REDIS_URL": "10.0.0.1:6380", "REDIS_AUTH": "app:p@ss:w"},
            "redis://app:p%40ss%3Aw@10.0.0.1:6380",
        ),
        ({"REDIS_URL": "[::1]:6379"}, "redis://[::1]:6379"),
        ({"REDIS_URL": "r:6379", "REDIS_TLS": "true"}, "rediss://r:6379"),
        (
            {
                "REDIS_URL": "r:6380",
                "REDIS_TLS": "1",
                "REDIS_TLS_CACERT": "/etc/tls/ca.pem",
                "REDIS_TLS_CLIENT_CERT": "/etc/tls/c.pem",
                "REDIS_TLS_CLIENT_KEY": "/etc/tls/k.pem",
                "REDIS_TLS_SKIP_HOSTNAME_VERIFICATION": "true",
            },
            "rediss://r:6380?ssl_ca_certs=/etc/tls/ca.pem&ssl_certfile=/etc/tls/c.pem"
            "&ssl_keyfile=/etc/tls/k.pem&ssl_check_hostname=false",
        ),
        (
            {
                "REDIS_URL": "mymaster,s1:26379,s2:26379",
                "REDIS_TYPE": "sentinel",
                "REDIS_AUTH": "pw",
            },
            "redis+sentinel://:pw@s1:26379,s2:26379/mymaster",
        ),
        (
            # REDIS_SOCKET_TYPE is only the single server's in the reference.
            {"REDIS_URL": "n1:6379,n2:6379", "REDIS_TYPE": "Cluster", "REDIS_SOCKET_TYPE": "unix"},
            "redis+cluster://n1:6379,n2:6379",
        ),
        ({"REDIS_URL": "r:6379", "BACKEND_TYPE": "redis"}, "redis://r:6379"),
    ],
)
def test_redis_variables_make_one_url(environ: dict[str, str], url: str) -> None:
    settings, reference = serve(["--config", "c"], environ)
    assert reference.errors == []
    assert settings.redis_url == url


def test_tls_files_without_redis_tls_are_ignored_as_in_the_reference() -> None:
    reference = translate({"REDIS_URL": "r:1", "REDIS_TLS_CACERT": "ca.pem"})
    assert reference.environ == {"RATELIMITD_REDIS_URL": "redis://r:1"}
    assert reference.ignored == {"REDIS_TLS_CACERT": "REDIS_TLS is not true"}


@pytest.mark.parametrize(
    ("environ", "directory"),
    [
        ({"RUNTIME_ROOT": "/srv/rl"}, "/srv/rl/config"),
        ({"RUNTIME_SUBDIRECTORY": "ratelimit"}, "/srv/runtime_data/current/ratelimit/config"),
        (
            {
                "RUNTIME_ROOT": "/r/",
                "RUNTIME_SUBDIRECTORY": "/a/b/",
                "RUNTIME_APPDIRECTORY": "yaml",
            },
            "/r/a/b/yaml",
        ),
        ({"RUNTIME_ROOT": "rel", "RUNTIME_APPDIRECTORY": "cfg"}, "rel/cfg"),
    ],
)
def test_runtime_directories_name_the_config_directory(
    environ: dict[str, str], directory: str
) -> None:
    settings, reference = serve([], {"CONFIG_TYPE": "FILE", **environ})
    assert settings.config == (directory,)
    assert reference.accepted == {"CONFIG_TYPE": "files are the only config source"}


@pytest.mark.parametrize(
    ("environ", "grpc_addr", "http_addr"),
    [
        ({"GRPC_PORT": "9081"}, "0.0.0.0:9081", "127.0.0.1:8080"),
        ({"GRPC_HOST": "127.0.0.1"}, "127.0.0.1:8081", "127.0.0.1:8080"),
        ({"GRPC_HOST": "::", "GRPC_PORT": "1"}, "[::]:1", "127.0.0.1:8080"),
        ({"PORT": "9080"}, "0.0.0.0:8081", "0.0.0.0:9080"),
        ({"PORT": "9080", "HOST": "127.0.0.1"}, "0.0.0.0:8081", "127.0.0.1:9080"),
        # tcsh exports HOST as the machine's name: without PORT it is not read.
        ({"HOST": "workstation"}, "0.0.0.0:8081", "127.0.0.1:8080"),
    ],
)
def test_ports_and_hosts_make_listen_addresses(
    environ: dict[str, str], grpc_addr: str, http_addr: str
) -> None:
    settings, _ = serve(["--config", "c"], environ)
    assert (settings.grpc_addr, settings.http_addr) == (grpc_addr, http_addr)


@pytest.mark.parametrize(
    ("name", "value", "field", "expected"),
    [
        ("LOG_LEVEL", "trace", "log_level", "debug"),
        ("LOG_LEVEL", "Info", "log_level", "info"),
        ("LOG_LEVEL", "warning", "log_level", "warning"),
        ("LOG_LEVEL", "FATAL", "log_level", "error"),
        ("LOG_FORMAT", "text", "log_format", "console"),
        ("LOG_FORMAT", "JSON", "log_format", "json"),
        ("SHADOW_MODE", "false", "shadow_mode", False),
        ("SHADOW_MODE", "1", "shadow_mode", True),
        ("RESPONSE_DYNAMIC_METADATA", "true", "response_dynamic_metadata", True),
        ("RESPONSE_DYNAMIC_METADATA", "F", "response_dynamic_metadata", False),
        ("QUOTA_MODE", "true", "quota_mode", True),
        ("QUOTA_MODE", "F", "quota_mode", False),
        ("NEAR_LIMIT_RATIO", "0.75", "near_limit_ratio", 0.75),
        ("CACHE_KEY_PREFIX", "ratelimit:", "key_prefix", "ratelimit:"),
        ("LOCAL_CACHE_SIZE_IN_BYTES", "0", "local_cache_size", 0),
        ("LOCAL_CACHE_SIZE_IN_BYTES", "10", "local_cache_size", 1),
        ("LOCAL_CACHE_SIZE_IN_BYTES", "3000", "local_cache_size", 10),
    ],
)
def test_one_variable_one_setting(name: str, value: str, field: str, expected: object) -> None:
    settings, reference = serve(["--config", "c"], {name: value})
    assert reference.errors == []
    assert getattr(settings, field) == expected


@pytest.mark.parametrize(
    ("environ", "headers"),
    [
        ({"LIMIT_RESPONSE_HEADERS_ENABLED": "true"}, "legacy"),
        (
            {"LIMIT_RESPONSE_HEADERS_ENABLED": "true", "LIMIT_RESET_HEADER": "ratelimit-reset"},
            "legacy",
        ),
        ({"LIMIT_RESPONSE_HEADERS_ENABLED": "false"}, "none"),
        ({"LIMIT_LIMIT_HEADER": "X-Limit"}, "xratelimit"),  # ignored: headers not enabled
    ],
)
def test_response_headers(environ: dict[str, str], headers: str) -> None:
    settings, reference = serve(["--config", "c"], environ)
    assert reference.errors == []
    assert settings.response_headers.value == headers


@pytest.mark.parametrize(
    ("environ", "tracing", "protocol"),
    [
        ({"TRACING_ENABLED": "true"}, "otlp", None),
        ({"TRACING_ENABLED": "true", "TRACING_EXPORTER_PROTOCOL": "grpc"}, "otlp", "accepted"),
        ({"TRACING_ENABLED": "true", "TRACING_EXPORTER_PROTOCOL": "http"}, "otlp", "ignored"),
        ({"TRACING_ENABLED": "false", "TRACING_EXPORTER_PROTOCOL": "grpc"}, "off", "ignored"),
    ],
)
def test_tracing(environ: dict[str, str], tracing: str, protocol: str | None) -> None:
    settings, reference = serve(["--config", "c"], environ)
    assert reference.errors == []
    assert settings.tracing.value == tracing
    kinds = {"accepted": reference.accepted, "ignored": reference.ignored}
    assert [kind for kind, names in kinds.items() if "TRACING_EXPORTER_PROTOCOL" in names] == (
        [protocol] if protocol else []
    )


def test_grpc_server_tls_files_are_used_only_with_use_tls() -> None:
    files = {
        "GRPC_SERVER_TLS_CERT": "s.pem",
        "GRPC_SERVER_TLS_KEY": "s.key",
        "GRPC_CLIENT_TLS_CACERT": "ca.pem",
    }
    settings, _ = serve(["--config", "c"], {"GRPC_SERVER_USE_TLS": "true", **files})
    assert (settings.tls_cert, settings.tls_key, settings.tls_client_ca) == tuple(files.values())
    settings, reference = serve(["--config", "c"], files)
    assert (settings.tls_cert, settings.tls_key, settings.tls_client_ca) == (None, None, None)
    assert set(reference.ignored) == set(files)


def test_settings_ratelimitd_does_not_need_are_reported_not_refused() -> None:
    environ = {
        "USE_PROMETHEUS": "true",
        "REDIS_POOL_SIZE": "20",
        "REDIS_PIPELINE_WINDOW": "150us",
        "TRACING_SAMPLING_RATE": "0.1",
        "REDIS_PERSECOND": "true",
        "REDIS_PERSECOND_URL": "r2:6379",
        "REDIS_STARTUP_MAX_RETRIES": "10",  # a family: any REDIS_STARTUP_* is reported
        "REDIS_CLUSTER_PIPELINE_PARALLELISM": "4",
        "PROMETHEUS_RESPONSE_TIME_AS_MILLISECONDS": "true",
    }
    reference = translate(environ)
    assert reference.errors == []
    assert reference.environ == {}
    assert set(reference.accepted) == {"USE_PROMETHEUS"}
    assert "/metrics" in reference.accepted["USE_PROMETHEUS"]
    assert set(reference.ignored) == set(environ) - {"USE_PROMETHEUS"}


def test_empty_variables_count_as_unset() -> None:
    reference = translate({"REDIS_URL": "", "GRPC_PORT": "", "LOG_LEVEL": ""})
    assert reference == Translation()


# -- precedence ---------------------------------------------------------------------------


def test_our_variables_win_and_leave_the_alias_unread() -> None:
    environ = {
        "RATELIMITD_GRPC_ADDR": "127.0.0.1:7000",
        "GRPC_PORT": "not a port",  # never read, so never an error
        "RATELIMITD_REDIS_URL": "redis://ours:6379/2",
        "REDIS_URL": "theirs:6379",
        "REDIS_AUTH": SECRET,
        "LOG_LEVEL": "debug",
    }
    settings, reference = serve(["--config", "c"], environ)
    assert reference.errors == []
    assert (settings.grpc_addr, settings.redis_url) == ("127.0.0.1:7000", "redis://ours:6379/2")
    assert settings.log_level == "debug"
    assert reference.overridden == {
        "GRPC_PORT": "RATELIMITD_GRPC_ADDR",
        "REDIS_URL": "RATELIMITD_REDIS_URL",
        "REDIS_AUTH": "RATELIMITD_REDIS_URL",
    }


def test_an_empty_variable_of_ours_still_wins() -> None:
    """RATELIMITD_REDIS_URL= asks for the in-memory store, whatever REDIS_URL says."""
    settings, reference = serve(["--config", "c"], {"RATELIMITD_REDIS_URL": "", "REDIS_URL": "r:1"})
    assert settings.redis_url is None
    assert reference.overridden == {"REDIS_URL": "RATELIMITD_REDIS_URL"}


def test_flags_win_and_the_note_says_so() -> None:
    environ = {"GRPC_PORT": "9000", "RUNTIME_ROOT": "/data", "SHADOW_MODE": "true"}
    settings, reference = serve(["--grpc-addr", "127.0.0.1:1", "--config", "mine"], environ)
    assert (settings.grpc_addr, settings.config, settings.shadow_mode) == (
        "127.0.0.1:1",
        ("mine",),
        True,
    )
    note = reference.note(settings.to_environment())
    assert note["overridden"] == {"GRPC_PORT": "--grpc-addr", "RUNTIME_ROOT": "--config"}
    assert note["read"] == {"SHADOW_MODE": "RATELIMITD_SHADOW_MODE=true"}


def test_a_worker_reads_nothing_and_logs_nothing() -> None:
    """Workers get every setting as RATELIMITD_* on top of the inherited environment: the
    reference's variables there are all overridden, so workers add no startup note."""
    environ = {
        "REDIS_URL": "r:6379",
        "REDIS_AUTH": "pw",
        "RUNTIME_ROOT": "/data",
        "GRPC_PORT": "9000",
        "PORT": "9001",
        "LOG_LEVEL": "debug",
        "USE_STATSD": "false",
    }
    settings, _ = serve([], environ)
    worker = translate({**environ, **settings.to_environment()})
    assert (worker.environ, worker.read, worker.errors) == ({}, {}, [])
    assert worker.note(settings.to_environment()) == {}


# -- errors and secrets -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"REDIS_URL": "r"}, "REDIS_URL: 'r' is not host:port"),
        ({"REDIS_URL": "r:99999"}, "REDIS_URL: 'r:99999' is not host:port"),
        ({"REDIS_URL": "a:1,b:2"}, "REDIS_URL: a list of servers needs REDIS_TYPE"),
        ({"REDIS_URL": "s:1", "REDIS_TYPE": "sentinel"}, "REDIS_URL: expected master_name,"),
        ({"REDIS_URL": "r:1", "REDIS_TYPE": "ring"}, "REDIS_TYPE: 'ring' is not single"),
        ({"REDIS_URL": "/var/run/r.sock"}, "REDIS_URL: unix sockets are not supported"),
        ({"REDIS_URL": "r:1", "REDIS_SOCKET_TYPE": "unix"}, "REDIS_SOCKET_TYPE: unix sockets"),
        ({"REDIS_URL": "redis://r:1"}, "REDIS_URL: expected host:port"),
        ({"REDIS_AUTH": "pw"}, "REDIS_URL: not set, though REDIS_AUTH is"),
        ({"BACKEND_TYPE": "memcache"}, "BACKEND_TYPE: 'memcache' is not supported"),
        ({"REDIS_URL": "r:1", "REDIS_TLS": "yes"}, "REDIS_TLS: 'yes' is not true or false"),
        (
            {"REDIS_URL": "a:1", "REDIS_TYPE": "cluster", "REDIS_TLS": "true"},
            "REDIS_TLS: TLS to a Redis cluster is not supported",
        ),
        (
            {"REDIS_URL": "m,s:1", "REDIS_TYPE": "sentinel", "REDIS_SENTINEL_AUTH": "x"},
            "REDIS_SENTINEL_AUTH: not supported",
        ),
        ({"CONFIG_TYPE": "GRPC_XDS_SOTW"}, "CONFIG_TYPE: 'GRPC_XDS_SOTW' is not supported"),
        ({"RUNTIME_ROOT": "/a:/b"}, "RUNTIME_ROOT: a path containing ':'"),
        ({"GRPC_PORT": "http"}, "GRPC_PORT: 'http' is not a port number"),
        ({"PORT": "0"}, "PORT: '0' is not a port number"),
        ({"GRPC_UDS": "/tmp/rl.sock"}, "GRPC_UDS: unix sockets are not supported"),
        ({"GRPC_SERVER_USE_TLS": "true"}, "GRPC_SERVER_TLS_CERT: not set"),
        (
            {
                "GRPC_SERVER_USE_TLS": "true",
                "GRPC_SERVER_TLS_CERT": "c",
                "GRPC_SERVER_TLS_KEY": "k",
                "GRPC_CLIENT_TLS_SAN": "envoy",
            },
            "GRPC_CLIENT_TLS_SAN: not supported",
        ),
        (
            {"LIMIT_RESPONSE_HEADERS_ENABLED": "true", "LIMIT_LIMIT_HEADER": "X-Limit"},
            "LIMIT_LIMIT_HEADER: custom header names are not supported",
        ),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL: 'loud' is not one of"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT: 'xml' is not text or json"),
        ({"SHADOW_MODE": "on"}, "SHADOW_MODE: 'on' is not true or false"),
        ({"TRACING_ENABLED": "yes"}, "TRACING_ENABLED: 'yes' is not true or false"),
        ({"NEAR_LIMIT_RATIO": "80%"}, "NEAR_LIMIT_RATIO: '80%' is not a number from 0 to 1"),
        ({"CACHE_KEY_PREFIX": "{x}"}, "CACHE_KEY_PREFIX: a key prefix cannot contain"),
        ({"LOCAL_CACHE_SIZE_IN_BYTES": "1MB"}, "LOCAL_CACHE_SIZE_IN_BYTES: '1MB' is not"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_variable(environ: dict[str, str], message: str) -> None:
    errors = translate(environ).errors
    assert len(errors) == 1
    assert errors[0].startswith(message)


def test_every_bad_variable_is_reported_at_once() -> None:
    errors = translate({"GRPC_PORT": "x", "PORT": "y", "LOG_LEVEL": "z"}).errors
    assert [error.split(":")[0] for error in errors] == ["GRPC_PORT", "PORT", "LOG_LEVEL"]


def test_secrets_are_never_shown() -> None:
    environ = {"REDIS_URL": "r:6379", "REDIS_AUTH": f"app:{SECRET}"}
    settings, reference = serve(["--config", "c"], environ)
    assert settings.redis_url is not None
    assert SECRET.replace("/", "%2F").replace(":", "%3A").replace("@", "%40") in settings.redis_url
    note = reference.note(settings.to_environment())
    assert note["read"]["REDIS_AUTH"] == "RATELIMITD_REDIS_URL=redis://***@r:6379"
    assert "s3cret" not in json.dumps(note)
    # A password pasted into REDIS_URL is not echoed by the error either.
    errors = translate({"REDIS_URL": f"app:{SECRET}@r:6379"}).errors
    assert errors
    assert "s3cret" not in " ".join(errors)


def test_serve_refuses_a_bad_alias_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve"], {"RUNTIME_ROOT": "/data", "GRPC_PORT": "grpc"})
    assert exited.value.code == 2
    assert "GRPC_PORT: 'grpc' is not a port number" in capsys.readouterr().err


def test_check_is_not_disturbed_by_the_reference_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("domain: d\n")
    assert cli.main(["check", str(path)], {"GRPC_PORT": "grpc"}) == 0


def test_the_migration_guide_covers_every_variable() -> None:
    guide = (REPO / "docs" / "migrating.md").read_text()
    families = re.findall(r"`([A-Z_]+_)\*`", guide)  # `MEMCACHE_*` covers MEMCACHE_TLS
    missing = [
        name
        for name in sorted(VARIABLES)
        if f"`{name}`" not in guide and not name.startswith(tuple(families))
    ]
    assert missing == []


# -- end to end ---------------------------------------------------------------------------

CONFIG = """
domain: edge
descriptors:
  - key: tenant
    rate_limit: {unit: hour, requests_per_unit: 4}
    descriptors:
      - key: route
        value: /slow
        rate_limit: {unit: hour, requests_per_unit: 2}
  - key: tenant
    value: vip
    rate_limit: {unit: hour, requests_per_unit: 6}
  - key: remote_address
    value: 10.0.0.9
    rate_limit: {unit: second, requests_per_unit: 0}
  - key: internal
    rate_limit: {unlimited: true}
"""

# A dot-file the reference loads unless RUNTIME_IGNOREDOTFILES=true: loaded, it would define
# the domain twice.
BACKUP = "domain: edge\ndescriptors: []\n"


def descriptor(*pairs: tuple[str, str]) -> ratelimit_pb2.RateLimitDescriptor:
    return ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in pairs]
    )


REQUESTS = [
    [descriptor(("tenant", "t1")), descriptor(("tenant", "t1"), ("route", "/slow"))],
    [descriptor(("tenant", "vip"))],
    [descriptor(("remote_address", "10.0.0.9")), descriptor(("internal", "job"))],
    [descriptor(("tenant", "t2")), descriptor(("unknown", "x"))],
]


def decisions(target: str) -> list[tuple[object, ...]]:
    """Every request of REQUESTS, five times, through Envoy's own client: the answers without
    their reset times (seconds that may tick over between two servers)."""
    answers: list[tuple[object, ...]] = []
    with grpc.insecure_channel(target) as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        for _ in range(5):
            for descriptors in REQUESTS:
                request = rls_pb2.RateLimitRequest(domain="edge", descriptors=descriptors)
                response = stub.ShouldRateLimit(request, timeout=5)
                statuses = tuple(
                    (
                        s.code,
                        s.current_limit.requests_per_unit,
                        s.current_limit.unit,
                        s.limit_remaining,
                    )
                    for s in response.statuses
                )
                answers.append((response.overall_code, statuses))
    return answers


@pytest.fixture
def redis_user(redis_server: RedisServer) -> Iterator[tuple[str, str]]:
    """A user with a password on the session's Redis (whose default user needs none)."""
    client = redis_server.client()
    client.acl_setuser(
        "migrator", enabled=True, passwords=[f"+{SECRET}"], commands=["+@all"], keys=["*"]
    )
    yield "migrator", SECRET
    client.acl_deluser("migrator")


def test_a_reference_environment_serves_like_our_flags(
    ratelimitd: RatelimitdFactory,
    redis_server: RedisServer,
    redis_url: str,
    redis_user: tuple[str, str],
    tmp_path: Path,
) -> None:
    # The reference's layout: RUNTIME_ROOT is a symlink swapped to deploy a new version.
    runtime = tmp_path / "runtime"
    config_dir = runtime / "v1" / "ratelimit" / "config"
    config_dir.mkdir(parents=True)
    (config_dir / "edge.yaml").write_text(CONFIG)
    (config_dir / ".edge.yaml.bak.yaml").write_text(BACKUP)
    (runtime / "current").symlink_to(runtime / "v1")

    grpc_port, http_port = free_port(), free_port()
    environment = {
        "USE_STATSD": "false",
        "USE_PROMETHEUS": "true",
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "json",
        "RUNTIME_ROOT": str(runtime / "current"),
        "RUNTIME_SUBDIRECTORY": "ratelimit",
        "RUNTIME_APPDIRECTORY": "config",
        "RUNTIME_WATCH_ROOT": "true",
        "RUNTIME_IGNOREDOTFILES": "true",
        "REDIS_SOCKET_TYPE": "tcp",
        "REDIS_TYPE": "single",
        "REDIS_URL": f"127.0.0.1:{redis_server.port}",
        "REDIS_AUTH": ":".join(redis_user),
        "CACHE_KEY_PREFIX": "ref_",
        "GRPC_HOST": "127.0.0.1",  # the reference's default is 0.0.0.0; loopback in tests
        "GRPC_PORT": str(grpc_port),
        "HOST": "127.0.0.1",
        "PORT": str(http_port),
    }
    theirs = ratelimitd.launch([], grpc_port=grpc_port, http_port=http_port, env=environment)
    ours = ratelimitd(runtime / "current" / "ratelimit" / "config", redis_url=redis_url)

    assert decisions(theirs.grpc_target) == decisions(ours.grpc_target)
    client = redis_server.client()
    assert client.keys("ref_*")
    assert client.keys("rl:*")  # separate counters: our default prefix

    events = [json.loads(line) for line in theirs.logs().splitlines() if line.startswith("{")]
    (note,) = [event for event in events if event["event"] == "reference_environment"]
    assert note["level"] == "warning"  # USE_STATSD has no effect here
    assert (
        note["read"]["REDIS_AUTH"]
        == f"RATELIMITD_REDIS_URL=redis://***@127.0.0.1:{redis_server.port}"
    )
    assert note["read"]["GRPC_PORT"] == f"RATELIMITD_GRPC_ADDR=127.0.0.1:{grpc_port}"
    assert set(note["accepted"]) == {
        "USE_PROMETHEUS",
        "RUNTIME_WATCH_ROOT",
        "RUNTIME_IGNOREDOTFILES",
    }
    assert set(note["ignored"]) == {"USE_STATSD"}
    assert "s3cret" not in theirs.logs()

    # Deploying the reference's way: a new version directory, then a swap of the root symlink.
    config_v2 = runtime / "v2" / "ratelimit" / "config"
    config_v2.mkdir(parents=True)
    (config_v2 / "edge.yaml").write_text(
        CONFIG.replace("requests_per_unit: 6", "requests_per_unit: 7")
    )
    (runtime / "next").symlink_to(runtime / "v2")
    os.replace(runtime / "next", runtime / "current")
    wait_until(
        lambda: "requests_per_unit=7" in theirs.http("/rlconfig")[1],
        15,
        "the reload after the symlink swap",
    )
