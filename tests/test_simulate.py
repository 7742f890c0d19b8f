"""`ratelimitd simulate`: traffic files, synthetic patterns, hand-computed outcomes of every
algorithm on the virtual clock, the table, JSON and plot outputs, and the CLI's exit codes."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from matplotlib.axes import Axes
from matplotlib.patches import StepPatch

from ratelimitd.cli import main
from ratelimitd.config.loader import load_config
from ratelimitd.core.headers import US_PER_S
from ratelimitd.model.messages import Descriptor, Request
from ratelimitd.model.rules import Config, Unit
from ratelimitd.tools.simulate.bins import auto_bin_us, binned
from ratelimitd.tools.simulate.plot import figure
from ratelimitd.tools.simulate.replay import START_US, Report, RuleStats, simulate
from ratelimitd.tools.simulate.report import format_report
from ratelimitd.tools.simulate.traffic import (
    MAX_REQUESTS,
    Arrival,
    Event,
    SimulateError,
    parse_pattern,
    parse_traffic,
)

ACME = Request("sim", (Descriptor((("tenant", "acme"),)),))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def config_file(tmp_path: Path, rate_limit: str) -> Path:
    """A config of domain `sim` with one rule, for `[(tenant, <any>)]`."""
    path = tmp_path / "sim.yaml"
    path.write_text(
        "domain: sim\ndescriptors:\n  - key: tenant\n"
        f"    rate_limit: {{name: tenant, {rate_limit}}}\n"
    )
    return path


def config_with(tmp_path: Path, rate_limit: str) -> Config:
    return load_config([config_file(tmp_path, rate_limit)])


def events(*specs: str, request: Request = ACME) -> list[Event]:
    return [Event(a.t_us, request, a.repeat) for spec in specs for a in parse_pattern(spec)]


def only_rule(report: Report) -> RuleStats:
    assert len(report.rules) == 1, report.rules
    return report.rules[0]


def counts(stats: RuleStats) -> tuple[int, int, int, int]:
    return stats.offered, stats.admitted, stats.rejected, stats.rejected_by_other


# -- algorithms, hand-computed ----------------------------------------------------------------


def test_token_bucket_burst_admits_the_capacity_then_asks_for_one_second(
    tmp_path: Path,
) -> None:
    config = config_with(tmp_path, "unit: second, requests_per_unit: 10, burst: 20")
    report = simulate(config, events("burst:30"))
    stats = only_rule(report)
    assert counts(stats) == (30, 20, 10, 0)
    assert stats.first_rejection_us == 0
    # The 21st finds an empty bucket: one token at 10/s is 0.1 s away, rounded up to 1 s.
    assert stats.max_retry_after_s == 1
    assert (report.requests, report.admitted, report.rejected) == (30, 20, 10)
    assert (report.first_rejection_us, report.max_retry_after_s) == (0, 1)


def test_token_bucket_steady_at_exactly_the_rate_admits_everything(tmp_path: Path) -> None:
    config = config_with(tmp_path, "unit: second, requests_per_unit: 10")
    stats = only_rule(simulate(config, events("steady:10:10")))
    assert counts(stats) == (100, 100, 0, 0)
    assert stats.first_rejection_us is None
    assert stats.max_retry_after_s is None


def test_token_bucket_at_twice_the_rate(tmp_path: Path) -> None:
    # Every 50 ms against 10/s with 10 tokens: each request takes 1 and 0.5 flows back, so
    # before the k-th there are 10 - (k-1)/2 tokens: the first 19 (t=0..0.9 s) pass. At 0.95 s
    # half a token is there (rejected, 50 ms to go); from 1.0 s every other request passes.
    config = config_with(tmp_path, "unit: second, requests_per_unit: 10")
    stats = only_rule(simulate(config, events("steady:20:10")))
    assert counts(stats) == (200, 19 + 90, 91, 0)
    assert stats.first_rejection_us == 950_000
    assert stats.max_retry_after_s == 1


def test_fixed_window_counts_per_epoch_aligned_window(tmp_path: Path) -> None:
    # One request a second for two minutes, 5 per minute: windows [0, 60) and [60, 120) each
    # admit their first 5. The 6th (t=5) waits for the window's end, 55 s later.
    config = config_with(tmp_path, "unit: minute, requests_per_unit: 5, algorithm: fixed_window")
    stats = only_rule(simulate(config, events("steady:1:120")))
    assert counts(stats) == (120, 10, 110, 0)
    assert stats.first_rejection_us == 5_000_000
    assert stats.max_retry_after_s == 55


def test_fixed_window_admits_twice_the_limit_across_a_boundary(tmp_path: Path) -> None:
    config = config_with(tmp_path, "unit: minute, requests_per_unit: 5, algorithm: fixed_window")
    stats = only_rule(simulate(config, events("burst:6@59.5", "burst:6@60")))
    assert counts(stats) == (12, 10, 2, 0)
    assert stats.first_rejection_us == 59_500_000
    # The 6th at 59.5 s waits for the window's end, 0.5 s (1 s rounded up); at 60 s, a minute.
    assert stats.max_retry_after_s == 60


def test_sliding_window_weighs_the_previous_window(tmp_path: Path) -> None:
    # 10 at t=0 fill window [0, 60). At t=90 that window is the previous one and half of it is
    # still inside the sliding minute: estimate 10 * 0.5 = 5, so 5 more pass. The 6th needs
    # 10 * w + 5 + 1 <= 10, w <= 0.4: 24 s of the window left, 6 s from now.
    config = config_with(tmp_path, "unit: minute, requests_per_unit: 10, algorithm: sliding_window")
    stats = only_rule(simulate(config, events("burst:10", "burst:10@90")))
    assert counts(stats) == (20, 15, 5, 0)
    assert stats.first_rejection_us == 90_000_000
    assert stats.max_retry_after_s == 6


def test_gcra_burst_then_one_per_interval(tmp_path: Path) -> None:
    # 10/s, burst 5: 5 pass at once, the 6th is 0.1 s early. By t=1 the key is idle again and
    # 10/s passes whole.
    config = config_with(tmp_path, "unit: second, requests_per_unit: 10, burst: 5, algorithm: gcra")
    stats = only_rule(simulate(config, events("burst:8", "steady:10:1@1")))
    assert counts(stats) == (18, 15, 3, 0)
    assert stats.first_rejection_us == 0
    assert stats.max_retry_after_s == 1


def test_a_request_rejected_by_one_limit_counts_as_blocked_for_the_other(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(
        """
domain: sim
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 100, name: tenant}
    descriptors:
      - key: route
        value: /search
        rate_limit: {unit: minute, requests_per_unit: 3, name: search}
"""
    )
    tenant = Descriptor((("tenant", "acme"),))
    search = Descriptor((("tenant", "acme"), ("route", "/search")))
    request = Request("sim", (tenant, search))
    report = simulate(load_config([path]), events("burst:5", request=request))
    by_name = {s.rule.name: s for s in report.rules}
    assert [s.rule.name for s in report.rules] == ["tenant", "search"]  # config order
    assert counts(by_name["search"]) == (5, 3, 2, 0)
    assert counts(by_name["tenant"]) == (5, 3, 0, 2)
    assert by_name["tenant"].first_rejection_us is None


def test_shadow_rule_reports_what_it_would_reject(tmp_path: Path) -> None:
    path = tmp_path / "shadow.yaml"
    path.write_text(
        "domain: sim\ndescriptors:\n  - key: tenant\n    shadow_mode: true\n"
        "    rate_limit: {unit: second, requests_per_unit: 2}\n"
    )
    report = simulate(load_config([path]), events("burst:3"))
    assert counts(only_rule(report)) == (3, 2, 1, 0)
    assert (report.admitted, report.rejected, report.max_retry_after_s) == (3, 0, None)
    assert "(shadow)" in format_report(report)


def test_descriptors_without_a_limit_are_counted(tmp_path: Path) -> None:
    config = config_with(tmp_path, "unit: second, requests_per_unit: 1")
    other = Request("sim", (Descriptor((("other", "x"),)),))
    unknown = Request("nope", (Descriptor((("tenant", "acme"),)),))
    report = simulate(config, events("burst:2", request=other) + events("burst:1", request=unknown))
    assert (report.requests, report.admitted, report.no_limit, report.rules) == (3, 3, 3, [])
    assert "no request matched a limit" in format_report(report)


def test_time_zero_starts_a_window_of_every_unit() -> None:
    for unit in Unit:
        assert START_US % (unit.seconds * 1_000_000) == 0, unit


# -- synthetic patterns -----------------------------------------------------------------------


def test_steady_pattern_is_evenly_spaced() -> None:
    assert parse_pattern("steady:10:1") == [Arrival(i * 100_000, 1) for i in range(10)]
    assert parse_pattern("steady:2:2@2.5") == [
        Arrival(t, 1) for t in (2_500_000, 3_000_000, 3_500_000, 4_000_000)
    ]
    # 2.3/s for 100 s is 229.99999999999997 in floating point: still 230 requests.
    assert len(parse_pattern("steady:2.3:100")) == 230


def test_burst_pattern_is_one_instant() -> None:
    assert parse_pattern("burst:30") == [Arrival(0, 30)]
    assert parse_pattern("burst:30@1.5") == [Arrival(1_500_000, 30)]


def test_ramp_pattern_follows_the_linear_rate() -> None:
    # From 0 to 10/s over 10 s: the expected count by t is t**2 / 2, so the i-th request comes
    # at sqrt(2 i) s, and 50 come in all.
    arrivals = parse_pattern("ramp:0:10:10")
    assert len(arrivals) == 50
    assert arrivals[2] == Arrival(2_000_000, 1)
    assert arrivals[8] == Arrival(4_000_000, 1)
    assert sum(a.t_us < 5_000_000 for a in arrivals) == 13  # sqrt(2 i) < 5 for i <= 12
    assert parse_pattern("ramp:10:10:3") == parse_pattern("steady:10:3")
    falling = parse_pattern("ramp:10:0:2")
    assert len(falling) == 10
    gaps = [b.t_us - a.t_us for a, b in itertools.pairwise(falling)]
    assert gaps == sorted(gaps)  # slowing down


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("pulse:1", "bad pattern 'pulse:1': expected steady:RATE:DURATION"),
        ("steady:10", "bad pattern"),
        ("burst:5@", "bad pattern"),
        ("steady:abc:5", "RATE must be a number, not 'abc'"),
        ("steady:-1:5", "RATE must be a finite number >= 0, not -1"),
        ("steady:inf:5", "RATE must be a finite number >= 0"),
        ("ramp:1:2:-3", "DURATION must be a finite number >= 0"),
        ("burst:0", "COUNT must be between 1 and"),
        ("burst:1.5", "COUNT must be a whole number"),
        ("burst:5@-1", "START must be a finite number >= 0"),
        ("steady:0.05:10", "makes no requests"),
        ("steady:10:0", "makes no requests"),
        ("steady:1e9:1e9", f"at most {MAX_REQUESTS}"),
    ],
)
def test_bad_patterns(spec: str, message: str) -> None:
    with pytest.raises(SimulateError) as info:
        parse_pattern(spec)
    assert message in str(info.value)


def test_auto_bin_and_binning() -> None:
    assert auto_bin_us(0) == 1_000_000
    assert auto_bin_us(99_999_999) == 1_000_000  # 100 one-second bins
    assert auto_bin_us(100_000_000) == 2_000_000
    assert auto_bin_us(3_600_000_000) == 60_000_000
    day = 86_400_000_000
    assert auto_bin_us(365 * day) == 4 * day  # past half a day: whole days, at most 100 bins
    assert binned([0, 1, 999_999, 1_000_000, 2_500_000], 1_000_000, 3) == [3, 1, 1]


# -- traffic files ----------------------------------------------------------------------------


def lines(*texts: str) -> list[bytes]:
    return [text.encode() + b"\n" for text in texts]


def test_traffic_lines_in_both_descriptor_shapes() -> None:
    parsed = parse_traffic(
        lines(
            '{"t": 1.5, "domain": "sim", "descriptors": [[["tenant", "acme"], ["route", "/a"]]]}',
            "",
            '{"t": 0, "descriptors": [{"entries": [{"key": "tenant", "value": "b"}, {"key": "x"}],'
            ' "hits_addend": 0}], "hitsAddend": 3, "count": 4}',
            '{"t": 2, "descriptors": [[["tenant", "c"]]], "hits": 2}',
        ),
        "traffic.jsonl",
        "fallback",
    )
    assert parsed == [
        Event(
            1_500_000,
            Request("sim", (Descriptor((("tenant", "acme"), ("route", "/a"))),)),
        ),
        Event(
            0,
            Request("fallback", (Descriptor((("tenant", "b"), ("x", "")), None, 0),), 3),
            4,
        ),
        Event(2_000_000, Request("fallback", (Descriptor((("tenant", "c"),)),), 2)),
    ]


def traffic_error(*texts: str, default_domain: str | None = None) -> str:
    with pytest.raises(SimulateError) as info:
        parse_traffic(lines(*texts), "traffic.jsonl", default_domain)
    return str(info.value)


GOOD = '{"t": 0, "domain": "sim", "descriptors": [[["tenant", "acme"]]]}'


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"t": 0,', "not JSON: Expecting property name enclosed in double quotes (column 9)"),
        ("[1, 2]", "expected a JSON object"),
        ('{"t": 0, "hit": 2}', "unknown field 'hit'; did you mean 'hits'?"),
        ('{"t": 0, "zzz": 2}', "unknown field 'zzz' (known: t, domain, descriptors"),
        ('{"domain": "sim"}', "missing 't'"),
        ('{"t": "1", "domain": "sim"}', "'t' must be a number, not '1'"),
        ('{"t": -1, "domain": "sim"}', "'t' must be a finite number >= 0, not -1"),
        ('{"t": 0, "descriptors": []}', "missing 'domain' (or give --domain)"),
        ('{"t": 0, "domain": 5, "descriptors": [[["a", "b"]]]}', "'domain' must be a string"),
        ('{"t": 0, "domain": "sim"}', "'descriptors' must be a list"),
        ('{"t": 0, "domain": "sim", "descriptors": []}', "at least one descriptor is required"),
        ('{"t": 0, "domain": "sim", "descriptors": ["a"]}', "descriptor 0 must be a list of"),
        (
            '{"t": 0, "domain": "sim", "descriptors": [[["a", "b", "c"]]]}',
            "descriptor 0 entry 0 must be a [key, value] pair",
        ),
        (
            '{"t": 0, "domain": "sim", "descriptors": [[["a", 1]]]}',
            "descriptor 0 entry 0 value must be a string, not 1",
        ),
        (
            '{"t": 0, "domain": "sim", "descriptors": [[["", "b"]]]}',
            "descriptor 0 entry 0 has an empty key",
        ),
        (
            '{"t": 0, "domain": "sim", "descriptors": [{"entries": [{"key": "a", "val": "b"}]}]}',
            "descriptor 0 entry 0: unknown field 'val'; did you mean 'value'?",
        ),
        (
            '{"t": 0, "domain": "sim", "descriptors": [{"entries": {}}]}',
            "descriptor 0: 'entries' must be a list",
        ),
        (
            '{"t": 0, "domain": "sim", "descriptors": [{"entries": [], "limit": {}}]}',
            "descriptor 0: unknown field 'limit'",
        ),
        ('{"t": 0, "domain": "sim", "descriptors": [[["a", "b"]]], "hits": -1}', "'hits' must be"),
        (
            '{"t": 0, "domain": "sim", "descriptors": [[["a", "b"]]], "count": true}',
            "'count' must be a whole number, not True",
        ),
    ],
)
def test_traffic_errors_name_the_line(line: str, message: str) -> None:
    error = traffic_error(GOOD, "", line)
    assert error.startswith("traffic.jsonl:3: "), error
    assert message in error


def test_traffic_that_is_not_utf8() -> None:
    with pytest.raises(SimulateError, match=r"^t\.jsonl:1: 'utf-8' codec can't decode"):
        parse_traffic([b'{"t": 0, "domain": "\xff"}'], "t.jsonl", None)


def test_traffic_is_replayed_in_time_order(tmp_path: Path) -> None:
    # File order would admit the t=2 request and reject the later-listed t=0 and t=1 ones.
    config = config_with(tmp_path, "unit: minute, requests_per_unit: 2, algorithm: fixed_window")
    parsed = parse_traffic(
        lines(*(f'{{"t": {t}, "descriptors": [[["tenant", "a"]]]}}' for t in (2, 0, 1))),
        "traffic.jsonl",
        "sim",
    )
    stats = only_rule(simulate(config, parsed))
    assert stats.admitted_at == [0, 1_000_000]
    assert stats.first_rejection_us == 2_000_000


# -- the command ------------------------------------------------------------------------------


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["simulate", *args], environ={})
    out, err = capsys.readouterr()
    return code, out, err


def burst_args(tmp_path: Path, *extra: str) -> list[str]:
    config = config_file(tmp_path, "unit: second, requests_per_unit: 10, burst: 20")
    return [
        *("--config", str(config), "--domain", "sim", "--descriptor", "tenant=acme"),
        *("--pattern", "burst:30"),
        *extra,
    ]


def test_command_prints_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(burst_args(tmp_path, "--pattern", "steady:10:10@1"), capsys)
    assert (code, err) == (0, "")
    summary, header, row = out.splitlines()
    assert summary == (
        "130 requests over 10.900 s: 120 admitted, 10 rejected "
        "(first at 0.000 s, max Retry-After 1 s)"
    )
    assert header.split() == [
        *("rule", "algorithm", "limit", "offered", "admitted", "rejected", "by", "other"),
        *("first", "rejection", "max", "Retry-After"),
    ]
    assert row.split() == [
        *("tenant", "token_bucket", "10/second,", "burst", "20", "130", "120", "10", "0"),
        *("0.000", "s", "1", "s"),
    ]


def test_command_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(burst_args(tmp_path, "--json"), capsys)
    assert code == 0
    report: dict[str, Any] = json.loads(out)
    assert report == {
        "requests": 30,
        "admitted": 20,
        "rejected": 10,
        "no_limit": 0,
        "duration_s": 0.0,
        "first_rejection_s": 0.0,
        "max_retry_after_s": 1,
        "rules": [
            {
                "rule": "tenant",
                "name": "tenant",
                "full_key": "sim.tenant",
                "domain": "sim",
                "source": f"{tmp_path / 'sim.yaml'}:3",
                "algorithm": "token_bucket",
                "requests_per_unit": 10,
                "unit": "second",
                "unit_multiplier": 1,
                "burst": 20,
                "shadow_mode": False,
                "offered": 30,
                "admitted": 20,
                "rejected": 10,
                "rejected_by_other": 0,
                "first_rejection_s": 0.0,
                "max_retry_after_s": 1,
            }
        ],
    }


def test_command_default_algorithm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = config_file(tmp_path, "unit: minute, requests_per_unit: 5")
    args = ["--config", str(config), "--domain", "sim", "--descriptor", "tenant=a"]
    args += ["--pattern", "steady:1:120", "--default-algorithm", "fixed_window", "--json"]
    code, out, _ = run(args, capsys)
    assert code == 0
    (rule,) = json.loads(out)["rules"]
    assert (rule["algorithm"], rule["admitted"], rule["max_retry_after_s"]) == (
        "fixed_window",
        10,
        55,
    )


def test_command_pattern_requests_with_descriptors_and_hits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Each request costs 5 on both its descriptors' buckets of 20: 4 pass, and both report.
    config = config_file(tmp_path, "unit: second, requests_per_unit: 10, burst: 20")
    args = ["--config", str(config), "--domain", "sim", "--hits", "5", "--pattern", "burst:5"]
    args += ["--descriptor", "tenant=a", "--descriptor", "tenant=b", "--json"]
    code, out, _ = run(args, capsys)
    assert code == 0
    report = json.loads(out)
    assert (report["requests"], report["admitted"]) == (5, 4)
    (rule,) = report["rules"]
    assert (rule["offered"], rule["admitted"], rule["rejected"]) == (10, 8, 2)


def test_command_replays_a_traffic_file_with_patterns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    traffic = tmp_path / "traffic.jsonl"
    traffic.write_text('{"t": 0.5, "descriptors": [[["tenant", "acme"]]], "count": 5}\n')
    code, out, _ = run(burst_args(tmp_path, "--traffic", str(traffic), "--json"), capsys)
    assert code == 0
    report = json.loads(out)
    # 20 of the burst pass; at 0.5 s five tokens have flowed back.
    assert (report["requests"], report["admitted"], report["duration_s"]) == (35, 25, 0.5)


def test_command_reads_traffic_from_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b'{"t": 0, "descriptors": [[["tenant", "a"]]]}\n'))
    monkeypatch.setattr(sys, "stdin", stdin)
    config = config_file(tmp_path, "unit: second, requests_per_unit: 1")
    code, out, _ = run(["--config", str(config), "--domain", "sim", "--traffic", "-"], capsys)
    assert code == 0
    assert out.startswith("1 request over 0.000 s: 1 admitted, 0 rejected\n")


def test_command_bad_traffic_exits_2_with_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    traffic = tmp_path / "traffic.jsonl"
    traffic.write_text(GOOD + "\n" + '{"t": 1, "domain": "sim", "descriptors": [[["a"]]]}\n')
    config = config_file(tmp_path, "unit: second, requests_per_unit: 1")
    code, out, err = run(["--config", str(config), "--traffic", str(traffic)], capsys)
    assert (code, out) == (2, "")
    assert err == (
        f"ratelimitd simulate: {traffic}:2: descriptor 0 entry 0 must be a [key, value] pair\n"
    )


def test_command_bad_config_exits_2_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path, "unit: fortnight, requests_per_unit: 1")
    code, out, err = run(
        ["--config", str(config), "--domain", "sim", "--descriptor", "a=b", "--pattern", "burst:1"],
        capsys,
    )
    assert (code, out) == (2, "")
    assert err.startswith(f"{config}:4: unknown unit 'fortnight'")


STEADY = ["--pattern", "steady:1:20", "--domain", "sim", "--descriptor", "a=b"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pattern", "burst:1"], "--pattern needs --domain and at least one --descriptor"),
        (["--pattern", "burst:1", "--domain", "sim"], "--pattern needs --domain"),
        ([], "no requests to replay"),
        (["--descriptor", "a=b"], "--descriptor and --hits describe --pattern requests"),
        (
            ["--pattern", "burst:1", "--domain", "", "--descriptor", "a=b"],
            "--domain/--descriptor: domain must not be empty",
        ),
        (["--traffic", "/nonexistent/t.jsonl"], "/nonexistent/t.jsonl: cannot read"),
        ([*STEADY, "--bin", "1"], "--bin sets the width of the bins of --plot; add --plot"),
        (
            [*STEADY, "--plot", "x.png", "--bin", "0.001"],
            "--bin 0.001 makes 19001 bins of the traffic; at most 10000",
        ),
    ],
)
def test_command_input_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    config = config_file(tmp_path, "unit: second, requests_per_unit: 1")
    code, out, err = run(["--config", str(config), *args], capsys)
    assert (code, out) == (2, "")
    assert err.startswith(f"ratelimitd simulate: {message}"), err


def test_command_bad_pattern_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        run(burst_args(tmp_path, "--pattern", "steady:10"), capsys)
    assert info.value.code == 2
    assert "argument --pattern: bad pattern 'steady:10'" in capsys.readouterr().err


def test_command_plot_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "out.png"
    code, out, err = run(
        burst_args(tmp_path, "--pattern", "steady:15:20@1", "--plot", str(png)), capsys
    )
    assert code == 0
    assert out.startswith("330 requests")
    assert err == f"plot written to {png}\n"
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000  # axes, bars and text, not an empty canvas


def stair_values(ax: Axes) -> list[list[float]]:
    """The heights of a panel's filled stairs, in drawing order: offered, then admitted."""
    return [list(patch.get_data()[0]) for patch in ax.patches if isinstance(patch, StepPatch)]


def test_plot_adds_a_zoomed_panel_when_a_burst_dwarfs_the_steady_phase(tmp_path: Path) -> None:
    # docs/tenants.md's tutorial run: 1,200 at once, then 12/s for a minute against 10/s,
    # burst 1000.
    config = config_with(tmp_path, "unit: minute, requests_per_unit: 600, burst: 1000")
    report = simulate(config, events("burst:1200", "steady:12:60@1"))
    overview, zoomed = figure(report, US_PER_S).axes
    assert overview.get_ylim()[1] >= 1200
    # Twice the usual level, max(10/s sustained, 12/s median offered): 12 against 10 shows.
    assert zoomed.get_ylim() == (0, 24)
    assert zoomed.get_shared_x_axes().joined(overview, zoomed)
    assert overview.get_yscale() == zoomed.get_yscale() == "linear"
    offered, admitted = stair_values(zoomed)
    assert (offered[0], admitted[0]) == (1200, 1000)
    assert (offered[30], admitted[30]) == (12, 10)


def test_plot_keeps_one_panel_per_rule_when_every_bin_fits_the_zoom(tmp_path: Path) -> None:
    config = config_with(tmp_path, "unit: second, requests_per_unit: 10")
    report = simulate(config, events("burst:15", "steady:12:20@1"))  # 15 <= 2 * 12
    (panel,) = figure(report, US_PER_S).axes
    assert panel.get_ylim()[0] == 0
    assert len(stair_values(panel)) == 2


def test_command_plot_with_a_bin_and_without_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "none.png"
    config = config_file(tmp_path, "unit: second, requests_per_unit: 1")
    args = ["--config", str(config), "--domain", "sim", "--descriptor", "other=x"]
    code, _, _ = run(
        [*args, "--pattern", "steady:5:2", "--plot", str(png), "--bin", "0.25"], capsys
    )
    assert code == 0
    assert png.read_bytes().startswith(PNG_SIGNATURE)


def test_command_plot_without_matplotlib(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ratelimitd.tools.simulate.plot", None)  # import fails
    code, out, err = run(burst_args(tmp_path, "--plot", str(tmp_path / "x.png")), capsys)
    assert (code, out) == (2, "")  # refused before replaying anything
    assert "--plot needs matplotlib" in err
    assert "pip install 'ratelimitd[plot]'" in err
    assert not (tmp_path / "x.png").exists()


def test_command_plot_to_an_unwritable_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "missing" / "out.png"
    code, _, err = run(burst_args(tmp_path, "--plot", str(target)), capsys)
    assert code == 2
    assert err.startswith(f"ratelimitd simulate: cannot write {target}: ")


def test_the_command_loads_no_protobuf_or_transport_module() -> None:
    # In a child process: this one must not import those modules, even to check.
    forbidden = (
        "ratelimitd.protos",
        "ratelimitd.transports.admin",
        "ratelimitd.app.service",
        "ratelimitd.app.server",
        "ratelimitd.transports.rpc",
        "ratelimitd.transports.grpc",
        "ratelimitd.transports.asgi",
        "ratelimitd.transports.rls_codec",
        "google.protobuf",
    )
    code = (
        "import sys, ratelimitd.cli, ratelimitd.tools.simulate, ratelimitd.tools.simulate.plot\n"
        f"forbidden = {forbidden!r}\n"
        "loaded = [m for m in sys.modules for f in forbidden if m == f or m.startswith(f + '.')]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
