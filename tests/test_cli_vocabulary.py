"""One vocabulary for a request on the command line (tools.request_flags): `ratelimitd
explain`, `ratelimitd simulate` and `examples/client.py` read `--descriptor` and `--hits` the
same way, and refuse alike what could be read two ways.

examples/client.py loads ratelimitd.protos, which clashes with xds-protos: it runs in a child
process, never imported here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ratelimitd.cli import main
from ratelimitd.model.messages import Descriptor
from ratelimitd.tools.request_flags import (
    DescriptorSyntaxError,
    parse_descriptor,
)
from tests.conftest import REPO, RatelimitdFactory, clean_environment

# The tenant-wide `free` rule catches what a misread descriptor becomes (the tenant's value
# swallowing the route), so a misreading shows as the wrong rule, not just a wrong count.
# pro_search refills one request in six minutes: none while a test runs.
CONFIG = """\
domain: api
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 100, name: free}
  - key: tenant
    value: acme
    descriptors:
      - key: route
        value: /v1/search
        rate_limit: {unit: hour, requests_per_unit: 10, name: pro_search}
"""
CLIENT = REPO / "examples" / "client.py"
TOOLS = ("explain", "simulate", "client")


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vocabulary") / "api.yaml"
    path.write_text(CONFIG)
    return path


def client(*args: str) -> subprocess.CompletedProcess[str]:
    """Run examples/client.py as a user would."""
    command = [sys.executable, str(CLIENT), *args]
    env = clean_environment()
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=30)


def refusal(tool: str, config: Path, request: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """What `tool` says on stderr as it refuses `request` (a usage error: exit 2)."""
    if tool == "client":
        done = client("--addr", "127.0.0.1:1", "--domain", "api", *request)
        assert (done.returncode, done.stdout) == (2, ""), done
        return done.stderr
    head = ["--config", str(config), "--domain", "api"]
    head += ["--pattern", "burst:1"] if tool == "simulate" else []
    with pytest.raises(SystemExit) as exited:
        main([tool, *head, *request], environ={})
    assert exited.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("spec", "entries"),
    [
        ("tenant=acme,route=/v1/search", (("tenant", "acme"), ("route", "/v1/search"))),
        ("route=/v1/search?a\\=b", (("route", "/v1/search?a=b"),)),
        ("ua=Mozilla (X11\\, Linux),a\\\\b=c", (("ua", "Mozilla (X11, Linux)"), ("a\\b", "c"))),
        ("flag=", (("flag", ""),)),
        ("b=2,a=1,b=3", (("b", "2"), ("a", "1"), ("b", "3"))),  # order and repeats kept
    ],
)
def test_a_descriptor_spec_reads_one_way(spec: str, entries: tuple[tuple[str, str], ...]) -> None:
    assert parse_descriptor(spec) == Descriptor(entries)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tenant=acme route=/v1/search", "has more than one '='"),
        ("tenant=acme;route=/v1/search", "has more than one '='"),
        ("route=/v1/search?a=b", "write \\= for an '=' inside a value"),
        ("ua=Mozilla (X11, Linux)", "' Linux)' is not KEY=VALUE (write \\, for a comma"),
        ("tenant", "'tenant' is not KEY=VALUE"),
        ("", "'' is not KEY=VALUE"),
        ("tenant=acme,", "'' is not KEY=VALUE"),
        ("=acme", "key '' is empty"),
        ("tenant=acme, route=/x", "key ' route' is empty or has spaces around it"),
        ("path=C:\\temp", "a backslash escapes only"),
        ("a=b\\", "a backslash escapes only"),
    ],
)
def test_an_ambiguous_descriptor_spec_is_an_error(spec: str, message: str) -> None:
    with pytest.raises(DescriptorSyntaxError) as info:
        parse_descriptor(spec)
    assert message in str(info.value)


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize(
    ("request_args", "message"),
    [
        (["--descriptor", "tenant=acme route=/v1/search"], "has more than one '='"),
        (["--descriptor", "tenant=acme,/v1/search"], "'/v1/search' is not KEY=VALUE"),
        (["--hits", "-1"], "'-1' is not a whole number from 0 to 4294967295"),
        (["--hits", "1.5"], "'1.5' is not a whole number"),
        (["--hits", "4294967296"], "'4294967296' is not a whole number"),
        (["--hits", "³"], "'³' is not a whole number"),
        # The old spellings: explain's positional first descriptor and multi-token
        # --descriptor, client.py's positional entries.
        (
            ["tenant=acme", "route=/v1/search"],
            "unexpected tenant=acme route=/v1/search: each descriptor is one --descriptor, its "
            "entries joined by commas (--descriptor tenant=acme,route=/v1/search, not "
            "tenant=acme route=/v1/search)",
        ),
        (["--descriptor", "tenant=acme", "route=/v1/search"], "unexpected route=/v1/search: "),
        (["tenant"], "unexpected tenant: each descriptor is one --descriptor"),
    ],
)
def test_every_tool_refuses_the_same_input_alike(
    tool: str,
    request_args: list[str],
    message: str,
    config: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = refusal(tool, config, request_args, capsys)
    assert message in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("cost", ["--hits", "--hits-addend"])
def test_the_same_descriptor_and_cost_mean_the_same_in_every_tool(
    cost: str, config: Path, ratelimitd: RatelimitdFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    # One request costing 3 against pro_search's 10: 7 left, 3 such requests admitted, and the
    # 4th refused whole (nothing taken: 1 left).
    request = ["--domain", "api", "--descriptor", "tenant=acme,route=/v1/search", cost, "3"]
    assert main(["explain", "--config", str(config), "--json", *request], environ={}) == 0
    (explained,) = json.loads(capsys.readouterr().out)["descriptors"]
    assert (explained["rule"]["name"], explained["counter"]["cost"]) == ("pro_search", 3)
    assert explained["status"]["limit_remaining"] == 7

    server = ratelimitd(config).grpc_target
    answers = []
    for _ in range(4):
        done = client("--addr", server, *request)
        assert done.returncode == 0, done.stderr
        answers.append(json.loads(done.stdout))
    (status,) = answers[0]["statuses"]
    assert (status["currentLimit"]["name"], status["limitRemaining"]) == ("pro_search", 7)
    assert [answer["statuses"][0].get("limitRemaining", 0) for answer in answers] == [7, 4, 1, 1]
    assert answers[-1]["overallCode"] == "OVER_LIMIT"

    simulated = ["--config", str(config), *request, "--pattern", "burst:4", "--json"]
    assert main(["simulate", *simulated], environ={}) == 0
    (rule,) = json.loads(capsys.readouterr().out)["rules"]
    assert (rule["name"], rule["admitted"], rule["rejected"]) == ("pro_search", 3, 1)


def test_explain_help_shows_its_own_flags_before_the_serve_flags(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["explain", "--help"], environ={})
    text = capsys.readouterr().out
    own, _, serve = text.partition("serve flags (the same keys and defaults as the server's):")
    own = own.partition("options:")[2]
    for flag in ("--domain", "--descriptor KEY=VALUE[,KEY=VALUE...]", "--hits N", "--json"):
        assert flag in own
        assert flag not in serve
    for flag in ("--config PATH", "--redis-url URL", "--key-prefix"):
        assert flag in serve
        assert flag not in own
    assert "--hits-addend" not in text  # read, but not a second name to learn


def test_client_help_documents_every_flag() -> None:
    done = client("--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for flag, meaning in [
        ("--addr HOST:PORT", "ratelimitd's gRPC address (default 127.0.0.1:8081"),
        ("--domain DOMAIN", "the request's domain (default example)"),
        ("--descriptor KEY=VALUE[,KEY=VALUE...]", "a descriptor of the request"),
        ("--hits N", "the hits_addend of the request: one request costing N"),
    ]:
        assert f"{flag} {meaning}" in text, flag
