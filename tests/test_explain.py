"""`ratelimitd explain` and POST /explain: the walk with the file:line of every node tried,
the rule or why there is none, the engine's own store key, and the counters' state read by a
peek that changes nothing in any store and answers what a real request then gets."""

from __future__ import annotations

import http.client
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import redis.cluster

from ratelimitd.algorithms import ALGORITHMS
from ratelimitd.cli import main
from ratelimitd.config.loader import load_config
from ratelimitd.core import keys
from ratelimitd.core.engine import Engine
from ratelimitd.core.matcher import How, trace, walk
from ratelimitd.model.messages import (
    UNLIMITED_REMAINING,
    Code,
    Decision,
    Descriptor,
    LimitOverride,
    Request,
)
from ratelimitd.model.rules import Config, Unit
from ratelimitd.storage.base import StoreError
from ratelimitd.storage.breaker import BreakerState, CircuitBreaker
from ratelimitd.storage.clock import FakeClock
from ratelimitd.storage.memory import MemoryStore
from ratelimitd.storage.redis import RedisStore
from ratelimitd.tools.explain import Explanation, Verdict, explain, render_text, to_json
from tests.conftest import RatelimitdFactory, free_port
from tests.stores import Driver, assert_same

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]

# Every descriptor node is marked `# @name` on its first line, where the loader says it is.
CONFIG = """\
domain: api
descriptors:
  - key: tenant  # @tenant
    rate_limit: {unit: minute, requests_per_unit: 10, name: per_tenant}
    descriptors:
      - key: route  # @admin
        value: /admin/*
        rate_limit: {unit: minute, requests_per_unit: 1}
      - key: route  # @v1
        value: /v1/*
        rate_limit: {unit: minute, requests_per_unit: 5, algorithm: sliding_window}
      - key: route  # @any_route
        rate_limit: {unit: minute, requests_per_unit: 7}
  - key: tenant  # @acme
    value: acme
    rate_limit: {unit: minute, requests_per_unit: 100, name: acme_plan}
    descriptors:
      - key: route  # @acme_search
        value: /v1/search
        rate_limit: {unit: minute, requests_per_unit: 3, replaces: [{name: acme_plan}]}
  - key: api_key  # @test_keys
    value: test-*
    share_threshold: true
    rate_limit: {unit: hour, requests_per_unit: 5, algorithm: fixed_window}
  - key: remote_address  # @internal
    value: 10.0.0.1
    rate_limit: {unlimited: true}
  - key: group  # @group
    value: batch
    descriptors:
      - key: job  # @job
        rate_limit: {unit: second, requests_per_unit: 2, algorithm: gcra}
"""

# One rule per algorithm, each under its own tenant's hash tag: a request naming several
# spans Redis Cluster slots.
ALGORITHM_CONFIG = """\
domain: algos
descriptors:
  - key: tenant
    descriptors:
      - {key: algo, value: token_bucket, rate_limit: {unit: minute, requests_per_unit: 6, burst: 9}}
      - {key: algo, value: gcra, rate_limit: {unit: minute, requests_per_unit: 6, algorithm: gcra}}
      - key: algo
        value: fixed_window
        rate_limit: {unit: minute, requests_per_unit: 6, algorithm: fixed_window}
      - key: algo
        value: sliding_window
        rate_limit: {unit: minute, requests_per_unit: 6, algorithm: sliding_window}
"""


def line_of(text: str, marker: str) -> int:
    """The 1-based line carrying `# @marker`."""
    (line,) = [n for n, row in enumerate(text.splitlines(), 1) if row.endswith(f"# @{marker}")]
    return line


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "api.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def config(config_path: Path) -> Config:
    return load_config([config_path])


def at(path: Path, marker: str) -> str:
    """`file:line` of the node marked `marker` in CONFIG."""
    return f"{path}:{line_of(CONFIG, marker)}"


def d(*entries: str, limit: LimitOverride | None = None, hits: int | None = None) -> Descriptor:
    """A descriptor from `key=value` strings."""
    pairs = tuple((key, value) for key, _, value in (e.partition("=") for e in entries))
    return Descriptor(pairs, limit, hits)


def explained(
    run: Run[Explanation], engine: Engine, *descriptors: Descriptor, domain: str = "api"
) -> Explanation:
    return run(explain(engine, Request(domain, descriptors)))


@pytest.fixture
def engine(config: Config) -> Engine:
    return Engine(config, MemoryStore(FakeClock()), key_prefix="t:")


# The walk


def test_the_walk_tries_wildcards_in_file_order_with_file_lines(
    engine: Engine, config_path: Path, run: Run[Explanation]
) -> None:
    (item,) = explained(run, engine, d("tenant=bob", "route=/v1/items")).descriptors
    tenant, route = item.steps
    assert [(t.how, str(t.node.source), t.matched) for t in tenant.tried] == [
        (How.KEY_ONLY, at(config_path, "tenant"), True)
    ]
    assert str(tenant.taken.source if tenant.taken else None) == at(config_path, "tenant")
    assert [(t.how, t.node.value, str(t.node.source), t.matched) for t in route.tried] == [
        (How.WILDCARD, "/admin/*", at(config_path, "admin"), False),
        (How.WILDCARD, "/v1/*", at(config_path, "v1"), True),
    ]
    assert route.taken is route.tried[1].node
    assert item.verdict is Verdict.LIMITED
    assert item.why == f"the rule at {at(config_path, 'v1')} applies"
    assert item.match is not None
    assert item.match.rule.limit is not None
    assert item.match.rule.limit.algorithm == "sliding_window"


def test_the_key_only_node_comes_after_every_wildcard(
    engine: Engine, config_path: Path, run: Run[Explanation]
) -> None:
    (item,) = explained(run, engine, d("tenant=bob", "route=/other")).descriptors
    assert [(t.how, t.matched) for t in item.steps[1].tried] == [
        (How.WILDCARD, False),
        (How.WILDCARD, False),
        (How.KEY_ONLY, True),
    ]
    assert str(item.match.rule.source if item.match else None) == at(config_path, "any_route")


def test_where_the_walk_stops_and_why(
    engine: Engine, config_path: Path, run: Run[Explanation]
) -> None:
    no_value, no_key, no_rule = explained(
        run, engine, d("tenant=acme", "route=/v1/other"), d("user=x"), d("group=batch")
    ).descriptors
    # An exact tenant is taken, and there is no backtracking to the key-only tenant.
    assert [(t.how, str(t.node.source)) for t in no_value.steps[0].tried] == [
        (How.EXACT, at(config_path, "acme"))
    ]
    assert no_value.steps[1].tried == ()
    assert no_value.steps[1].taken is None
    assert no_value.why == (
        "the walk stopped at entry 2 (route=/v1/other): no value matched and there is no "
        "key-only node"
    )
    assert no_key.steps[0].keys_here == ("tenant", "api_key", "remote_address", "group")
    assert no_key.why == "the walk stopped at entry 1 (user=x): no descriptor with key 'user' there"
    assert no_rule.why == f"the walk ended at {at(config_path, 'group')}, which has no rate_limit"
    for item in (no_value, no_key, no_rule):
        assert item.verdict is Verdict.NO_RULE
        assert item.counter is None
        assert item.status is not None
        assert item.status.code is Code.OK


def test_trace_takes_exactly_the_nodes_walk_takes(config: Config) -> None:
    root = config.domains["api"].root
    for entries in (
        [("tenant", "bob"), ("route", "/v1/x")],
        [("tenant", "bob"), ("route", "/admin/x")],
        [("tenant", "acme"), ("route", "/v1/search")],
        [("tenant", "acme"), ("route", "/nope")],
        [("api_key", "test-1")],
        [("group", "batch"), ("job", "j")],
        [("group", "other"), ("job", "j")],
        [("nothing", "x")],
    ):
        assert [step.taken for step in trace(root, entries) if step.taken] == walk(root, entries)


# Rules, replaces, overrides, domains, keys


def test_nested_descriptors_and_replaces(
    engine: Engine, config_path: Path, run: Run[Explanation]
) -> None:
    plan, search = explained(
        run, engine, d("tenant=acme"), d("tenant=acme", "route=/v1/search")
    ).descriptors
    assert plan.verdict is Verdict.REPLACED
    assert plan.counter is None
    assert [str(rule.source) for rule in plan.replaced_by] == [at(config_path, "acme_search")]
    assert plan.why == (
        f"the rule at {at(config_path, 'acme')} is named 'acme_plan', which "
        f"api.tenant_acme.route_/v1/search ({at(config_path, 'acme_search')}) replaces"
    )
    assert search.verdict is Verdict.LIMITED
    assert [step.taken.source.line for step in search.steps if step.taken] == [
        line_of(CONFIG, "acme"),
        line_of(CONFIG, "acme_search"),
    ]
    assert search.counter is not None
    assert search.counter.now is not None
    assert search.counter.now.remaining == 3


def test_unlimited(engine: Engine, run: Run[Explanation]) -> None:
    (item,) = explained(run, engine, d("remote_address=10.0.0.1")).descriptors
    assert item.verdict is Verdict.UNLIMITED
    assert item.counter is None
    assert item.status is not None
    assert item.status.remaining == UNLIMITED_REMAINING


def test_an_envoy_override_skips_the_walk(engine: Engine, run: Run[Explanation]) -> None:
    found = explained(run, engine, d("tenant=bob", limit=LimitOverride(2, Unit.MINUTE), hits=3))
    (item,) = found.descriptors
    assert item.verdict is Verdict.LIMITED
    assert item.steps == ()
    assert item.why == "Envoy's limit override 2/minute applies; the config is not consulted"
    assert item.match is not None
    assert item.match.rule.source is None
    assert item.counter is not None
    assert item.counter.key == "t:{api:tenant=bob}:tb:2/60:2"
    # A cost of 3 never fits a limit of 2.
    assert item.counter.offered is not None
    assert not item.counter.offered.admitted
    assert found.decision is not None
    assert found.decision.code is Code.OVER_LIMIT


def test_an_unknown_domain(engine: Engine, run: Run[Explanation]) -> None:
    found = explained(run, engine, d("tenant=bob"), domain="elsewhere")
    assert found.domain is None
    (item,) = found.descriptors
    assert item.verdict is Verdict.UNKNOWN_DOMAIN
    assert item.steps == ()
    assert item.why == "no config defines domain 'elsewhere': no limit applies"
    assert to_json(found)["domain_source"] is None
    assert "domain elsewhere (not configured)" in render_text(found)


def test_share_threshold_values_share_the_engines_counter(engine: Engine, run: Run[Any]) -> None:
    (item,) = explained(run, engine, d("api_key=test-1")).descriptors
    assert item.match is not None
    assert item.match.shared == ("test-*",)
    assert item.counter is not None
    assert item.counter.key == "t:{api:api_key~test-*}:fw:5/3600:5"
    run(engine.should_rate_limit(Request("api", (d("api_key=test-1", hits=2),))))
    (other,) = explained(run, engine, d("api_key=test-2")).descriptors
    assert other.counter is not None
    assert other.counter.now is not None
    assert other.counter.key == item.counter.key
    assert other.counter.now.remaining == 3


def test_the_key_is_the_counter_the_engine_writes(
    engine: Engine, config: Config, run: Run[Any]
) -> None:
    descriptors = (d("tenant=bob", "route=/v1/x"), d("tenant=acme", "route=/v1/search"))
    found = explained(run, engine, *descriptors)
    shown = [item.counter.key for item in found.descriptors if item.counter]
    rule = found.descriptors[0].match.rule if found.descriptors[0].match else None
    assert rule is not None
    assert rule.limit is not None
    tag = ALGORITHMS[rule.limit.algorithm].key_tag
    entries = descriptors[0].entries
    assert shown[0] == keys.counter_key("api", entries, rule.limit, tag, None, "t:")
    run(engine.should_rate_limit(Request("api", descriptors)))
    store = engine.store
    assert isinstance(store, MemoryStore)
    assert sorted(store._states) == sorted(shown)


# The peek: nothing changes, and the answer is what a real request gets


def _answers(decision: Decision) -> list[tuple[Code, int, int | None]]:
    return [(s.code, s.remaining, s.reset_us) for s in decision.statuses]


def test_explain_never_changes_any_store(
    driver: Driver, config: Config, run: Run[Any], config_path: Path
) -> None:
    engine = Engine(config, driver.store)
    traffic = Request(
        "api",
        (d("tenant=bob", "route=/v1/x"), d("tenant=acme", "route=/v1/search"), d("api_key=test")),
        hits_addend=2,
    )
    run(engine.should_rate_limit(traffic))
    driver.clock.advance(1.5)
    before = driver.snapshot()
    writes = driver.writes() if driver.redis is not None else 0
    assert before
    # Admitted, rejected (too costly), spanning slots, and counters not yet stored.
    for request in (
        traffic,
        traffic._replace(hits_addend=50),
        Request("api", (d("tenant=new", "route=/admin/x"), d("group=batch", "job=j"))),
    ):
        run(explain(engine, request))
    assert_same(before, driver.snapshot())
    if driver.redis is not None:
        assert driver.writes() == writes


def test_peek_answers_what_the_real_request_then_gets(
    driver: Driver, run: Run[Any], tmp_path: Path
) -> None:
    path = tmp_path / "algos.yaml"
    path.write_text(ALGORITHM_CONFIG)
    engine = Engine(load_config([path]), driver.store)
    singles = [
        Request("algos", (d(f"tenant=t-{name}", f"algo={name}"),), hits_addend=2)
        for name in sorted(ALGORITHMS)
    ]
    # Every algorithm at once, each in its own slot: one rejection rejects them all.
    together = Request(
        "algos", (*tuple(r.descriptors[0] for r in singles), d("tenant=x", "algo=gcra", hits=5))
    )
    seen = set()
    for step in range(8):
        for request in [*singles, together]:
            found = run(explain(engine, request))
            check_only = request._replace(
                descriptors=tuple(x._replace(hits_addend=0) for x in request.descriptors)
            )
            # The state now is what a check-only request reports.
            now = [(i.counter.now.remaining, i.counter.now.reset_us) for i in found.descriptors]
            real_now = run(engine.should_rate_limit(check_only))
            assert now == [(s.remaining, s.reset_us) for s in real_now.statuses]
            decision = run(engine.should_rate_limit(request))
            assert found.decision is not None
            assert _answers(found.decision) == _answers(decision)
            assert found.decision.response_headers == decision.response_headers
            offered = [i.counter.offered.admitted for i in found.descriptors]
            assert offered == [s.code is Code.OK for s in decision.statuses]
            seen.add(decision.code)
        driver.clock.advance(2.5 if step % 2 else 0.4)
    assert seen == {Code.OK, Code.OVER_LIMIT}


def test_the_circuit_breaker_refuses_peeks_while_open_and_never_counts_them(
    run: Run[Any], config: Config
) -> None:
    breaker = CircuitBreaker(threshold=1, cooldown_s=60)
    down = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5, breaker=breaker)
    engine = Engine(config, down)
    request = Request("api", (d("tenant=bob"),))
    found = run(explain(engine, request))
    assert found.store_error is not None
    assert "redis" in found.store_error
    assert found.decision is None
    assert found.descriptors[0].status is None
    assert "store unavailable" in render_text(found)
    states = [breaker.state]  # a failed peek does not open the circuit
    run(engine.should_rate_limit(request))  # a real failure does
    states.append(breaker.state)
    assert states == [BreakerState.CLOSED, BreakerState.OPEN]
    with pytest.raises(StoreError, match="circuit open"):
        run(down.peek([]))
    run(down.close())


# The admin HTTP endpoint and the command line

HTTP_CONFIG = """\
domain: web
descriptors:
  - key: tenant
    rate_limit: {unit: hour, requests_per_unit: 5, name: per_tenant}
"""


def post(port: int, path: str, body: bytes) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_post_explain_on_a_real_server_changes_nothing(
    ratelimitd: RatelimitdFactory, tmp_path: Path, redis_url: str
) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(HTTP_CONFIG)
    server = ratelimitd(path, "--key-prefix", "edge:", redis_url=redis_url)
    body = json.dumps(
        {"domain": "web", "descriptors": [{"entries": [{"key": "tenant", "value": "a"}]}]}
    ).encode()
    for _ in range(2):
        assert post(server.http_port, "/json", body)[0] == 200
    client = redis.Redis.from_url(redis_url)
    key = "edge:{web:tenant=a}:tb:5/3600:5"
    before = (client.get(key), client.info("persistence")["rdb_changes_since_last_save"])
    status, text = post(server.http_port, "/explain", body)
    assert status == 200, text
    assert (client.get(key), client.info("persistence")["rdb_changes_since_last_save"]) == before
    answer = json.loads(text)
    (item,) = answer["descriptors"]
    assert answer["code"] == "OK"
    assert item["verdict"] == "limited"
    assert item["walk"][0]["tried"] == [
        {"how": "key-only", "value": None, "source": f"{path}:3", "matched": True}
    ]
    assert item["rule"]["name"] == "per_tenant"
    assert item["rule"]["source"] == f"{path}:3"
    assert (item["rule"]["overdraft"], item["rule"]["detailed_metric"]) == (0, False)
    assert item["counter"]["key"] == key
    assert item["counter"]["now"]["remaining"] == 3
    assert item["status"]["limit_remaining"] == 2
    real = json.loads(post(server.http_port, "/json", body)[1])
    assert real["statuses"][0]["limitRemaining"] == 2
    assert post(server.http_port, "/explain", b"{not json")[0] == 400
    assert post(server.http_port, "/explain", b'{"domain": "web"}')[0] == 400


def test_post_explain_is_not_on_the_public_asgi_port(
    ratelimitd: RatelimitdFactory, tmp_path: Path
) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(HTTP_CONFIG)
    server = ratelimitd(path, transport="asgi")
    body = b'{"domain": "web", "descriptors": [{"entries": [{"key": "tenant", "value": "a"}]}]}'
    assert post(server.grpc_port, "/explain", body)[0] == 404
    assert post(server.http_port, "/explain", body)[0] == 200


def _cli(args: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["explain", *args], environ={})
    return code, capsys.readouterr().out


def test_the_command_line_explains_against_redis(
    config_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str], run: Run[Any]
) -> None:
    store = RedisStore(redis_url, timeout=5)
    engine = Engine(load_config([config_path]), store, key_prefix="cli:")
    run(engine.should_rate_limit(Request("api", (d("tenant=acme", "route=/v1/search"),))))
    run(store.close())
    client = redis.Redis.from_url(redis_url)
    writes = client.info("persistence")["rdb_changes_since_last_save"]
    flags = ["--config", str(config_path), "--redis-url", redis_url, "--key-prefix", "cli:"]
    request = ["--domain", "api", "--descriptor", "tenant=acme,route=/v1/search"]
    request += ["--descriptor", "tenant=bob,route=/v1/x", "--descriptor", "tenant=acme"]
    code, text = _cli([*flags, *request], capsys)
    assert code == 0
    assert f"      exact     'acme'                   {at(config_path, 'acme')}  taken" in text
    assert f"      wildcard  '/admin/*'               {at(config_path, 'admin')}  no match" in (
        text
    )
    assert "  key: cli:{api:tenant=acme}:tb:3/60:3:route=/v1/search\n" in text
    assert "  now: 2 remaining" in text
    assert "  cost 1: admitted -> OK, 1 remaining" in text
    assert "  replaced: the rule at" in text
    code, out = _cli([*flags, "--json", *request], capsys)
    answer = json.loads(out)
    assert [item["verdict"] for item in answer["descriptors"]] == [
        "limited",
        "limited",
        "replaced",
    ]
    assert answer["descriptors"][0]["counter"]["now"]["remaining"] == 2
    assert client.info("persistence")["rdb_changes_since_last_save"] == writes
    # The explain path never loads the protobuf code that clashes with xds-protos.
    clashing = {
        "app.admin",
        "app.service",
        "app.server",
        "transports.rpc",
        "transports.grpc",
        "transports.asgi",
    }
    clashing |= {"transports.rls_codec"}
    loaded = [name for name in sys.modules if name.startswith("ratelimitd.")]
    assert not [n for n in loaded if n.startswith("ratelimitd.protos") or n[11:] in clashing]


def test_the_command_line_rejects_what_it_cannot_explain(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        _cli(["--config", str(config_path), "--domain", "api", "--descriptor", "tenant"], capsys)
    assert exited.value.code == 2
    assert "'tenant' is not KEY=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _cli(["--config", str(config_path), "--domain", "api"], capsys)  # no descriptor
    assert "at least one descriptor is required" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("domain: api\ndescriptors: [{key: a, rate_limit: {unit: fortnight}}]\n")
    explain_bad = ["explain", "--config", str(bad), "--domain", "api", "--descriptor", "a=b"]
    assert main(explain_bad, environ={}) == 1
    assert f"{bad}:2: " in capsys.readouterr().err


def test_the_text_says_an_overdraft_limit_keeps_its_charge_in_a_rejected_request(
    tmp_path: Path, run: Run[Any]
) -> None:
    path = tmp_path / "usage.yaml"
    path.write_text(
        "domain: usage\n"
        "descriptors:\n"
        "  - {key: bytes, rate_limit: {unit: minute, requests_per_unit: 10, overdraft: true}}\n"
        "  - {key: calls, rate_limit: {unit: minute, requests_per_unit: 1}}\n"
        "  - {key: plain, rate_limit: {unit: minute, requests_per_unit: 10}}\n"
    )
    engine = Engine(load_config([path]), MemoryStore(FakeClock()))
    run(engine.should_rate_limit(Request("usage", (d("calls=c"),))))
    found = explained(run, engine, d("bytes=b"), d("calls=c"), d("plain=p"), domain="usage")
    text = render_text(found)
    assert "overdraft: charged all the same" in text.split("descriptor 2")[0]
    assert "so nothing is taken" in text.split("descriptor 3")[1]
