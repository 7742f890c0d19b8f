"""The benchmark run: what `bench/run.py` does (see bench/README.md).

For each worker count and transport: the constant-answer server of that transport and
ratelimitd (or, with --target, another RLS server), both kept running and measured in turn,
scenario by scenario, --rounds times each (constant, ratelimitd, constant, ...): a warm-up
run, a gRPC probe of what it answers, the measured run at full load; then, once, a run at
half the (median) measured rate for its p99. Ratios are taken round by round, their median
reported. Then, with --e2e, Envoy with and without the filter.

With --soak MINUTES instead: per worker count, transport and scenario, a fresh ratelimitd
warmed up and probed the same way, then MINUTES of steady load with its memory sampled.

With --tenants [N]: generated configs of 10 and N tenants, their load time and matcher speed
in a fresh interpreter, ratelimitd's decisions on each (alternating rounds), and reloads of
the large one under load. With --noisy: a quiet tenant alone, then beside a tenant at 100
times its quota, on Redis and on a Redis Cluster (bench/tenants.py).

ratelimitd's answers are counted by ratelimitd's own counters (bench/metrics.py).
"""

from __future__ import annotations

import argparse
import functools
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import redis

from bench import e2e, metrics, report, soak, tenants
from bench.load import Bodies as BodyFiles
from bench.load import H2Load, LoadResult, RunningLoad, Wrk, build_shim
from bench.procs import (
    HarnessError,
    MachineCpu,
    Supervisor,
    UnavailableError,
    install_signal_handlers,
    load_average,
)
from bench.report import ConfigRow, E2ERow, NoisyRow, ReloadRow, Round, Row, SoakRow, shares_text
from bench.scenarios import DEFAULT_DISTINCT_KEYS, DEFAULT_NAMES, NAMES, Scenario, build
from bench.servers import (
    ProbeResult,
    ProcessCpu,
    RedisCluster,
    RedisCounters,
    RedisServer,
    Server,
    Store,
    probe,
    redis_counters,
    serve_flags,
    start_constant,
    start_ratelimitd,
    start_redis,
    start_redis_cluster,
)

BENCH = Path(__file__).resolve().parent
CONFIG = BENCH / "config"
# ratelimitd's configs of the scenarios: bench.yaml in the plain reference format (a --target
# server loads it too), and authz.yaml, the `check` scenario's domain with our `extract:`.
SCENARIO_CONFIGS = (CONFIG / "bench.yaml", CONFIG / "authz.yaml")
RESULTS = BENCH / "RESULTS.md"
TRANSPORTS = ("grpc", "asgi")
# --soak's, --tenants' and --noisy's default: the faster transport (docs/benchmarks.md); --soak's
# scenario: the plainest request.
MODE_TRANSPORTS = ["asgi"]
SOAK_SCENARIOS = ["one"]
PROBE_SAMPLE = 20
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
AnyRow = TypeVar("AnyRow", Row, SoakRow, NoisyRow)
# Debian package of each tool the harness runs.
TOOLS = {"h2load": "nghttp2-client", "wrk": "wrk", "redis-server": "redis-server"}
MODES = ("--soak", "--tenants", "--noisy")  # each instead of the table of scenarios
# The constant server a --target is measured beside, and compared with: (transport, workers).
TARGET_PARTNER = ("grpc", 1)


def _csv(allowed: Sequence[str] | None = None) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if items == ["none"]:
            return []
        for item in items:
            if allowed is not None and item not in allowed:
                raise argparse.ArgumentTypeError(f"{item!r}: choose from {', '.join(allowed)}")
        return items

    return parse


def _counts(text: str) -> list[int]:
    try:
        counts = [int(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated whole numbers") from exc
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: numbers of at least 1")
    return counts


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return host, int(port)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Load-test ratelimitd (or another RLS server) against constant-answer "
        "servers of the same transport; print the table and append it to bench/RESULTS.md.",
    )
    add = parser.add_argument
    add(
        "--transports",
        type=_csv(TRANSPORTS),
        help="comma-separated: grpc, asgi (default: both; with --soak, --tenants, --noisy: asgi)",
    )
    add(
        "--workers",
        type=_counts,
        default=[1],
        help="comma-separated worker counts, e.g. 1,2 (default: 1)",
    )
    add(
        "--scenarios",
        type=_csv(NAMES),
        help=f"comma-separated: {', '.join(NAMES)}, or none (default: all but "
        "single-connection; with --soak: one)",
    )
    add(
        "--rounds",
        type=int,
        default=1,
        metavar="N",
        help="measure the constant server and ratelimitd (or --target) of each row alternately "
        "N times; report medians and the median of the per-round ratios (default 1)",
    )
    add("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    add("--warmup", type=float, default=3.0, help="seconds of unmeasured warm-up (default 3)")
    add("--clients", "-c", type=int, default=16, help="h2load connections (default 16)")
    add("--streams", "-m", type=int, default=8, help="h2load streams per connection (default 8)")
    add("--threads", "-t", type=int, default=1, help="h2load threads (default 1)")
    add(
        "--no-half-load",
        dest="half_load",
        action="store_false",
        help="skip the p99 run at 50%% of the measured throughput",
    )
    add(
        "--distinct-keys",
        type=int,
        default=DEFAULT_DISTINCT_KEYS,
        help=f"keys of the distinct scenario (default {DEFAULT_DISTINCT_KEYS})",
    )
    add(
        "--target",
        type=_address,
        metavar="HOST:PORT",
        help="measure this RLS server instead of starting ratelimitd (load bench/config)",
    )
    add(
        "--target-redis",
        type=_address,
        metavar="HOST:PORT",
        help="the target's Redis, to count its commands per decision (read only)",
    )
    add(
        "--target-pid",
        type=int,
        action="append",
        default=[],
        metavar="PID",
        help="the target's process id, for CPU per decision; repeatable",
    )
    add(
        "--e2e",
        action="store_true",
        help="also measure end to end: wrk -> Envoy (with/without the rate limit filter)",
    )
    add(
        "--soak",
        type=float,
        metavar="MINUTES",
        help="instead: steady load on ratelimitd for MINUTES, its memory sampled every "
        f"{soak.SAMPLE_INTERVAL_S:g} s",
    )
    add(
        "--tenants",
        type=int,
        nargs="?",
        const=tenants.DEFAULT_TENANTS,
        metavar="N",
        help=f"instead: per-tenant quotas at scale, {tenants.SMALL} tenants against N (default "
        f"{tenants.DEFAULT_TENANTS:,}): config load time, matcher, decisions, and reloads under "
        "load",
    )
    add(
        "--noisy",
        action="store_true",
        help=f"instead: a noisy neighbour: one tenant at {tenants.NOISY_FACTOR}x its quota "
        "beside a quiet one, on Redis and on a 3-node Redis Cluster",
    )
    add(
        "--rps",
        type=float,
        help="--soak: requests per second in all (default: half of the warm-up's rate); "
        "--tenants: of the reload run (default: half of the full-load rate)",
    )
    add("--wrk-connections", type=int, default=16, help="wrk connections (default 16)")
    add("--wrk-threads", type=int, default=1, help="wrk threads (default 1)")
    add("--envoy-concurrency", type=int, default=1, help="Envoy worker threads (default 1)")
    add(
        "--ratelimitd-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `ratelimitd serve`; repeatable, e.g. --ratelimitd-arg=--x=1",
    )
    add("--results", type=Path, default=RESULTS, help="file the record is appended to")
    add("--no-results", dest="write_results", action="store_false", help="print the table only")
    add("--keep-workdir", action="store_true", help="keep logs and h2load files")
    args = parser.parse_args(argv)
    modes = [m for m in MODES if getattr(args, m[2:]) not in (None, False)]
    if len(modes) > 1:
        parser.error(f"{' and '.join(modes)}: one at a time")
    mode = modes[0] if modes else None
    if args.transports is None:
        args.transports = MODE_TRANSPORTS if mode else list(TRANSPORTS)
    if mode is not None and (args.target is not None or args.e2e):
        parser.error(f"{mode} measures ratelimitd: not with --target or --e2e")
    if mode in ("--tenants", "--noisy"):
        if args.scenarios is not None:
            parser.error(f"{mode} sends requests of its own: not with --scenarios")
        args.scenarios = []
    if args.scenarios is None:
        args.scenarios = SOAK_SCENARIOS if args.soak else list(DEFAULT_NAMES)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.rounds > 1 and mode is not None:
        parser.error(f"--rounds is for the table of scenarios: not with {mode}")
    if args.soak is not None:
        if args.soak <= 0:
            parser.error("--soak needs a number of minutes above 0")
        if not args.scenarios:
            parser.error("--soak needs a scenario")
        if args.rps is None and args.warmup <= 0:
            parser.error("--soak needs --rps or a --warmup to measure the rate from")
    if args.tenants is not None and args.tenants <= tenants.SMALL:
        parser.error(f"--tenants N: more than {tenants.SMALL}")
    if args.rps is not None and (mode not in ("--soak", "--tenants") or args.rps <= 0):
        parser.error("--rps is a rate above 0 for --soak or --tenants")
    if args.duration < 1 or args.warmup < 0:
        parser.error("--duration must be at least 1 s and --warmup at least 0")
    if args.clients < 1 or args.streams < 1 or args.threads < 1 or args.threads > args.clients:
        parser.error("need 1 <= --threads <= --clients and --streams >= 1")
    if not args.scenarios and not args.e2e and mode is None:
        parser.error("nothing to do: no scenarios and no --e2e")
    if args.distinct_keys < 2:
        parser.error("--distinct-keys must be at least 2")
    return args


def missing_tools(args: argparse.Namespace) -> list[str]:
    """The external tools this run needs that are not on PATH."""
    needed = ["h2load"] if args.scenarios or args.tenants or args.noisy else []
    if args.target is None:
        needed.append("redis-server")
    if args.e2e:
        needed.append("wrk")
    return [tool for tool in needed if shutil.which(tool) is None]


def log(message: str) -> None:
    """Progress, on stderr."""
    print(message, file=sys.stderr, flush=True)


@dataclass
class Before:
    """Counters read just before a measured run."""

    server_cpu: float | None
    redis: RedisCounters | None
    machine: MachineCpu
    processes: ProcessCpu | None = None  # each worker's, and a supervisor's


class Bench:
    """One benchmark run: starts, measures and stops everything; collects rows and notes."""

    def __init__(self, args: argparse.Namespace, supervisor: Supervisor) -> None:
        self.args = args
        self.supervisor = supervisor
        self.h2load = H2Load(args.clients, args.streams, args.threads)
        self.rows: list[Row] = []
        self.e2e_rows: list[E2ERow] = []
        self.soak_rows: list[SoakRow] = []
        self.config_rows: list[ConfigRow] = []
        self.reload_rows: list[ReloadRow] = []
        self.noisy_rows: list[NoisyRow] = []
        self.notes: list[str] = []
        self.redis: RedisServer | None = None
        self.cluster: RedisCluster | None = None
        self.target_redis: redis.Redis | None = None
        self.shim: Path | None = None
        self.flags: set[str] = set()
        self.scenarios: list[Scenario] = []
        self.bodies: dict[str, BodyFiles] = {}

    # -- the whole run ------------------------------------------------------------------

    def run(self) -> None:
        """Measure everything requested."""
        args = self.args
        workdir = self.supervisor.workdir
        self.notes.append(f"load average at start: {load_average()}")
        if args.tenants is not None:
            self.scenarios = [tenants.spread(args.tenants)]
        elif args.noisy:
            self.scenarios = [
                tenants.tenant(tenants.QUIET, 0.0),
                tenants.tenant(tenants.NOISY, 1.0),
            ]
        else:
            self.scenarios = [build(n, distinct_keys=args.distinct_keys) for n in args.scenarios]
        for scenario in self.scenarios:
            self.bodies[scenario.name] = BodyFiles.write(workdir, scenario.name, scenario.messages)
        if any(s.distinct > 1 for s in self.scenarios):
            self.shim, why = build_shim(workdir)
            if self.shim is None:
                self.notes.append(f"body shim unavailable ({why}): multi-key scenarios not run")
        if args.target is None:
            self.redis = start_redis(self.supervisor)
            self.flags = serve_flags()
            self.notes.append(
                "`ratelimitd serve` flags detected: "
                + (", ".join(sorted(self.flags)) or "neither --transport nor --workers")
                + " (without them only the grpc transport with 1 worker runs)"
            )
        elif args.target_redis is not None:
            host, port = args.target_redis
            self.target_redis = redis.Redis(host=host, port=port, socket_timeout=5)
        if args.tenants is not None:
            self.run_tenants()
            return
        if args.soak is not None or args.noisy:
            for workers in args.workers:
                for transport in args.transports:
                    if args.noisy:
                        self.noisy_ratelimitd(transport, workers)
                    else:
                        self.soak_ratelimitd(transport, workers)
            return
        if self.scenarios:
            self.measure_scenarios()
            self.compute_ratios()
        if args.e2e:
            self.run_e2e()

    def settings(self) -> str:
        """The load settings, for the record."""
        args = self.args
        h2load = f"h2load -c {args.clients} -m {args.streams} -t {args.threads}"
        if args.tenants is not None:
            rate = f"{args.rps:,.0f}/s" if args.rps else "half the full-load rate"
            return (
                f"tenants: configs of {tenants.SMALL} and {args.tenants:,} tenants "
                f"(bench/tenants.py: 4 plans, 1 tenant in {tenants.OVERRIDE_EVERY} with an "
                f"override, a default plan); load_config {tenants.LOAD_RUNS} times each, in a "
                f"fresh interpreter; match() best of {tenants.MATCH_REPEAT}; {h2load}, "
                f"scenario `tenants`, per server {args.warmup:g} s warm-up (unmeasured), "
                f"{args.duration:g} s measured"
                + (", then p99 @50%: the same at half the measured rate" if args.half_load else "")
                + f"; reloads: {h2load} at {rate} (--rps) for {tenants.reload_duration():g} s "
                f"and more, {len(tenants.RELOAD_TRIGGERS)} reloads "
                f"({', '.join(tenants.RELOAD_TRIGGERS)}) {tenants.RELOAD_GAP_S:g} s apart"
            )
        if args.noisy:
            return (
                f"noisy neighbour: {h2load} per tenant; per store a fresh ratelimitd, "
                f"`{tenants.QUIET}` ({tenants.NOISY_TENANTS[tenants.QUIET]}: 1000/s) warmed up "
                f"for {args.warmup:g} s, then at {tenants.QUIET_RPS:,.0f}/s for "
                f"{args.duration:g} s alone, then again beside `{tenants.NOISY}` "
                f"({tenants.NOISY_TENANTS[tenants.NOISY]}: 10/s, burst {tenants.NOISY_BURST}) at "
                f"{tenants.NOISY_FACTOR} times 10/s, from {tenants.NOISY_LEAD_S:g} s before to "
                f"{tenants.NOISY_LEAD_S:g} s after; the store flushed before each run"
            )
        if args.soak is not None:
            rate = f"{args.rps:,.0f}/s" if args.rps else "half the warm-up's rate"
            return (
                f"soak: {h2load}; per row "
                f"a fresh ratelimitd, {args.warmup:g} s warm-up at full load (unmeasured), "
                f"then {args.soak:g} min at {rate} (--rps); RSS (VmRSS summed over "
                f"ratelimitd's process tree) and a gRPC probe every {soak.SAMPLE_INTERVAL_S:g} s"
            )
        text = f"{h2load}"
        shaped = [s for s in self.scenarios if s.clients is not None or s.streams is not None]
        for scenario in shaped:
            load = self._h2load(scenario)
            text += f" (`{scenario.name}`: h2load -c {load.clients} -m {load.streams})"
        subject = "the target" if args.target is not None else "ratelimitd"
        if args.rounds > 1:
            text += (
                f"; {args.rounds} rounds per row, the constant server and {subject} "
                "alternately (both kept running), each round "
                f"{args.warmup:g} s warm-up (unmeasured), probe, {args.duration:g} s measured; "
                "figures are medians over the rounds, `vs constant` the median of the rounds' "
                "ratios (each round's ÷ the constant server's same round)"
            )
        else:
            text += (
                f"; per row {args.warmup:g} s warm-up (unmeasured), {args.duration:g} s measured "
                f"(the constant server and {subject} both running, measured in turn)"
            )
        if args.half_load:
            text += ", then p99 @50%: the same for --duration at half the measured rate (--rps)" + (
                ", once after the rounds, at half the median rate" if args.rounds > 1 else ""
            )
        if args.e2e:
            text += (
                f"; e2e: wrk -c {args.wrk_connections} -t {args.wrk_threads}, "
                f"Envoy --concurrency {args.envoy_concurrency}"
            )
        return text

    def tables(self) -> list[tuple[str, str]]:
        """The record's tables, each with its title."""
        tables = []
        if self.config_rows:
            title = "Configs (load_config and match() in a fresh interpreter):"
            tables.append((title, report.config_table(self.config_rows)))
        if self.rows:
            if self.args.tenants is not None:
                title = f"Decisions, requests spread over {self.args.tenants:,} tenants:"
                tables.append((title, report.grpc_table(self.rows, ratio="vs 10 tenants")))
            else:
                tables.append(("", report.grpc_table(self.rows)))
        if self.reload_rows:
            title = (
                f"Reloads of the {self.args.tenants:,}-tenant config under load (requests by "
                "start time: in a reload's window, from its trigger to `config_reloaded`, or "
                "outside all):"
            )
            tables.append((title, report.reload_table(self.reload_rows)))
        if self.e2e_rows:
            tables.append(("End to end (wrk → Envoy → upstream):", report.e2e_table(self.e2e_rows)))
        if self.soak_rows:
            title = "Soak (steady load; RSS of ratelimitd's process tree):"
            tables.append((title, report.soak_table(self.soak_rows)))
        if self.noisy_rows:
            title = (
                "Noisy neighbour (admitted and OVER_LIMIT from ratelimitd's counters; Redis "
                "RT/decision: script calls ÷ decisions of the whole run):"
            )
            tables.append((title, report.noisy_table(self.noisy_rows)))
        return tables

    # -- servers ------------------------------------------------------------------------

    def measure_scenarios(self) -> None:
        """Per worker count and transport, the constant-answer server and ratelimitd, side by
        side in alternating rounds. With --target, nothing of ours but the constant servers:
        the target alternates with the grpc 1-worker constant server (the one its ratio is
        taken against), or runs alone after the others when that one is not measured."""
        args = self.args
        target_measured = False
        for workers in args.workers:
            for transport in args.transports:
                group = [_Subject("constant", self._constant_starter(transport, workers), False)]
                if args.target is None:
                    start = self._ratelimitd_starter(transport, workers, SCENARIO_CONFIGS)
                    group.append(_Subject("ratelimitd", start, args.half_load))
                elif (transport, workers) == TARGET_PARTNER:
                    group.append(_Subject("target", self._target_starter(), args.half_load))
                    target_measured = True
                self._measure_group(transport, workers, group)
        if args.target is not None and not target_measured:
            transport, workers = TARGET_PARTNER
            self._measure_group(
                transport, workers, [_Subject("target", self._target_starter(), args.half_load)]
            )

    def _constant_starter(self, transport: str, workers: int) -> Callable[[], Server]:
        """Starts the constant-answer server of `transport` with `workers` processes."""

        def start() -> Server:
            return start_constant(self.supervisor, transport=transport, workers=workers)

        return start

    def _ratelimitd_starter(
        self,
        transport: str,
        workers: int,
        config: Path | Sequence[Path],
        redis_url: str | None = None,
    ) -> Callable[[], Server]:
        """Starts ratelimitd with `config` (one path or several) on this run's Redis (or on
        `redis_url`)."""
        assert self.redis is not None
        url = redis_url or self.redis.url

        def start() -> Server:
            return start_ratelimitd(
                self.supervisor,
                transport=transport,
                workers=workers,
                flags=self.flags,
                redis_url=url,
                config=config,
                extra_args=self.args.ratelimitd_arg,
            )

        return start

    def _target_starter(self) -> Callable[[], Server]:
        """The --target server (nothing started, nothing flushed, nothing stopped)."""
        host, port = self.args.target

        def start() -> Server:
            return Server("target", "grpc", 1, host, port, pids=list(self.args.target_pid))

        return start

    def _measure_group(self, transport: str, workers: int, group: Sequence[_Subject]) -> None:
        """Start every server of `group`, a row per scenario each, and keep them all running:
        per scenario, --rounds rounds, each server measured in turn in every round
        (constant, ratelimitd, constant, ratelimitd, ...), each round a full measured run
        (warm-up, probe, full load, checks); after the rounds, the half-load run of those
        that have one; then stop them. A server that does not start, or a round that fails,
        is recorded in its rows and the rest go on."""
        rounds = self.args.rounds
        running: list[tuple[Server, list[Row], bool]] = []
        try:
            for subject in group:
                rows = [Row(transport, workers, s.name, subject.label) for s in self.scenarios]
                self.rows += rows
                log(f"== {subject.label} {transport} workers={workers}")
                try:
                    running.append((subject.start(), rows, subject.half))
                except HarnessError as exc:
                    for row in rows:
                        _record_error(row, exc)
                    log(f"   not run: {exc}")
            if len(running) > 1 or rounds > 1:
                log(
                    f"== {' and '.join(server.label for server, _, _ in running)} {transport} "
                    f"workers={workers}: {rounds} round{'s' if rounds > 1 else ''} per scenario"
                )
            for index, scenario in enumerate(self.scenarios):
                for number in range(1, rounds + 1):
                    for server, rows, _ in running:
                        measure = functools.partial(
                            self.measure_round, server, scenario, rows[index], number
                        )
                        self._guarded(rows[index], scenario, measure, number)
                for server, rows, half in running:
                    if half:
                        measure = functools.partial(
                            self.measure_half, server, scenario, rows[index]
                        )
                        self._guarded(rows[index], scenario, measure)
                self._half_beside(running, scenario, index)
        finally:
            for server, _, _ in running:
                for proc in server.procs:
                    self.supervisor.stop(proc)

    def _half_beside(
        self, running: list[tuple[Server, list[Row], bool]], scenario: Scenario, index: int
    ) -> None:
        """The servers without a half-load run of their own (the constant server) are loaded
        at the rate the measured server's half-load run asked for, so that the two p99s
        compare at the same offered load; the ratio is a note of the measured server's row."""
        measured = [rows[index] for _, rows, half in running if half and rows[index].half]
        if not measured:
            return
        subject = measured[0]
        for server, rows, half in running:
            if half:
                continue
            row = rows[index]
            measure = functools.partial(self.measure_half, server, scenario, row, subject.rate)
            self._guarded(row, scenario, measure)
            ours, theirs = subject.half, row.half
            if ours and theirs and ours.p99_ms and theirs.p99_ms:
                subject.notes.append(
                    f"p99 at half load {ours.p99_ms:.2f} ms vs {row.server} at the same offered "
                    f"rate {theirs.p99_ms:.2f} ms: {ours.p99_ms / theirs.p99_ms:.2f}x"
                )

    def _guarded(
        self, row: AnyRow, scenario: Scenario, measure: Callable[[], None], number: int = 0
    ) -> None:
        """Run `measure`; a failure is recorded in `row` (with its round, when there are
        several), and the run goes on."""
        try:
            measure()
        except (HarnessError, redis.RedisError, OSError) as exc:
            several = number and self.args.rounds > 1 and not isinstance(exc, UnavailableError)
            _record_error(row, exc, f"round {number}: " if several else "")
            log(f"   {scenario.name}: failed: {exc}")

    def soak_ratelimitd(self, transport: str, workers: int) -> None:
        """A soak per scenario, each on a fresh ratelimitd: its memory starts from scratch."""
        start = self._ratelimitd_starter(transport, workers, SCENARIO_CONFIGS)
        for scenario in self.scenarios:
            row = SoakRow(transport, workers, scenario.name, self.args.soak)
            self.soak_rows.append(row)
            title = f"soak ratelimitd {transport} workers={workers} {scenario.name}"
            self._on_server(title, start, [(scenario, row)], self.soak)

    # -- --tenants ----------------------------------------------------------------------

    def run_tenants(self) -> None:
        """Configs of SMALL and --tenants tenants: load time and matcher in a fresh
        interpreter; then per worker count and transport, decisions on each config and
        reloads of the large one under load."""
        large = self.args.tenants
        width = tenants.width_for(large)
        configs = {}
        for count in (tenants.SMALL, large):
            directory = self.supervisor.workdir / f"tenants-{count}"
            configs[count] = tenants.write_config(directory, tenants.tenants_yaml(count, width))
            row = ConfigRow(count)
            self.config_rows.append(row)
            self.measure_config(row, configs[count], tenants.names(large, width))
        for workers in self.args.workers:
            for transport in self.args.transports:
                self.tenants_ratelimitd(transport, workers, configs)

    def measure_config(self, row: ConfigRow, config: Path, spread: Sequence[str]) -> None:
        """load_config's time and memory on `config`, and match()'s time per call for the
        names of every request sent (`spread`) and for the config's own tenants."""
        log(f"== {row.label}: load_config x{tenants.LOAD_RUNS}, beside a loop, match()")
        row.size_kib = sum(f.stat().st_size for f in config.iterdir()) / 1024
        try:
            times = tenants.load_times(config)
            row.load_s, row.rules = times.seconds, times.rules
            row.rss_mib, row.gc_ms = times.rss_kib / 1024, times.gc_s * 1000
            row.stall_ms = tenants.loop_stall_s(config) * 1000
            listed = tenants.names(row.tenants, tenants.width_for(len(spread)))
            row.match_ns["spread"] = tenants.match_ns(config, spread)
            row.match_ns["listed"] = tenants.match_ns(config, listed)
        except HarnessError as exc:
            row.error = str(exc).splitlines()[0]
            log(f"   failed: {exc}")
            return
        best = row.best_s
        assert best is not None
        row.notes.append("load_config runs, s: " + ", ".join(f"{t:.3f}" for t in row.load_s))
        if row.tenants >= tenants.DEFAULT_TENANTS and best > tenants.LOAD_TARGET_S:
            row.problems.append(
                f"best load {best:.2f} s: over the {tenants.LOAD_TARGET_S:g} s target"
            )
        log(
            f"   load best {best:.3f} s, median {row.median_s:.3f} s, {row.rules} rules, "
            f"+{row.rss_mib:.1f} MiB, full GC {row.gc_ms:.1f} ms, loop stall {row.stall_ms:.0f} "
            "ms; match() " + ", ".join(f"{k} {v:.0f} ns" for k, v in row.match_ns.items())
        )

    def tenants_ratelimitd(self, transport: str, workers: int, configs: dict[int, Path]) -> None:
        """ratelimitd on each config through the `tenants` scenario, LOOKUP_ROUNDS times in
        alternating order (machine noise falls on both), each round's large-config
        decisions/s as a ratio of its small-config one's; then, on the last large one,
        reloads under load."""
        scenario = self.scenarios[0]
        small, large = min(configs), max(configs)
        ratios: list[float] = []
        for round_ in range(1, tenants.LOOKUP_ROUNDS + 1):
            rows = {}
            for count in (small, large) if round_ % 2 else (large, small):
                server = f"ratelimitd, {count:,} tenants (round {round_})"
                row = rows[count] = Row(transport, workers, scenario.name, server)
                self.rows.append(row)
                reload = count == large and round_ == tenants.LOOKUP_ROUNDS

                def measure(
                    server: Server, scenario: Scenario, row: Row, reload: bool = reload
                ) -> None:
                    self.measure(server, scenario, row, half=self.args.half_load)
                    if reload:
                        self.reloads(server, scenario, configs[large], row)

                self._on_server(
                    f"ratelimitd {transport} workers={workers}, {count:,} tenants, round {round_}",
                    self._ratelimitd_starter(transport, workers, configs[count]),
                    [(scenario, row)],
                    measure,
                )
            base, scaled = rows[small].rate, rows[large].rate
            if base and scaled is not None:
                ratio = scaled / base
                rows[small].ratio, rows[large].ratio = 1.0, ratio
                ratios.append(ratio)
        if ratios:
            self.notes.append(
                f"{transport} w{workers}: decisions/s at {large:,} tenants ÷ at {small}, by "
                f"round: {', '.join(f'{r:.2f}' for r in ratios)}; median "
                f"{statistics.median(ratios):.2f}"
            )

    def reloads(self, server: Server, scenario: Scenario, config: Path, lookup: Row) -> None:
        """tenants.RELOAD_TRIGGERS during one h2load run at a fixed rate: --rps, else half
        the full-load rate of `lookup`. Fills reload rows, one per reload, one for the
        requests outside them and one for the whole run."""
        args = self.args
        rate = args.rps or (lookup.rate or 0.0) / 2
        if rate <= 0:
            self.reload_rows.append(ReloadRow("reloads", error="no rate to load with"))
            return
        log(f"   reloads under load: {rate:,.0f}/s")
        bodies = self._start_scenario(server, scenario)
        assert server.metrics_url is not None  # a ratelimitd
        reloader = tenants.Reloader(
            server, config, self.supervisor.workdir / "tenants-staged.yaml", args.tenants
        )
        try:
            result, counts, rows = tenants.reload_under_load(
                reloader,
                lambda duration: self._start_load(
                    server, scenario, "reloads", duration, rate / args.clients
                ),
            )
        except HarnessError as exc:
            self.reload_rows.append(ReloadRow("reloads", error=str(exc).splitlines()[0]))
            log(f"   reloads failed: {exc}")
            return
        server.check_alive()
        accounting = metrics.account(server.metrics_url, counts, [result])
        whole = ReloadRow(
            f"whole run ({result.rate:,.0f}/s of {rate:,.0f} asked)",
            requests=result.succeeded,
            p50_ms=result.p50_ms,
            p99_ms=result.p99_ms,
            fail_open=accounting.failure_allowed,
        )
        *reloads, outside = rows
        outside.fail_open = accounting.failure_allowed - sum(r.fail_open or 0 for r in reloads)
        accounting.check(whole.problems, whole.warnings)
        whole.problems += _load_problems(result, bodies)
        self.reload_rows += [*rows, whole]
        self.notes.append(f"reload run: {accounting.summary()}")
        for row in rows:
            took = f"{row.reload_s:5.2f} s" if row.reload_s is not None else " " * 7
            log(
                f"   {row.window:32} {took}  {row.requests:7,} requests  "
                f"p99 {row.p99_ms or 0:7.2f} ms  max {row.max_ms or 0:7.2f} ms"
            )

    # -- --noisy ------------------------------------------------------------------------

    def noisy_ratelimitd(self, transport: str, workers: int) -> None:
        """The noisy-neighbour runs on our Redis, then on a Redis Cluster of 3 nodes."""
        config = tenants.write_config(
            self.supervisor.workdir / "noisy", tenants.noisy_tenants_yaml()
        )
        redis_server = self.redis
        assert redis_server is not None
        self.noisy_on(transport, workers, config, "redis", lambda: redis_server)
        self.noisy_on(transport, workers, config, "redis cluster (3)", self._cluster)

    def _cluster(self) -> RedisCluster:
        """The run's Redis Cluster, started when first needed."""
        if self.cluster is None:
            self.cluster = start_redis_cluster(self.supervisor)
        return self.cluster

    def noisy_on(
        self,
        transport: str,
        workers: int,
        config: Path,
        label: str,
        store_of: Callable[[], Store],
    ) -> None:
        """The quiet tenant alone, then beside the noisy one, on a fresh ratelimitd."""
        quiet, noisy = self.scenarios
        noisy_rate = tenants.NOISY_FACTOR * tenants.NOISY_RATE_PER_S
        if len(self.args.transports) * len(self.args.workers) > 1:
            label = f"{label}, {transport} w{workers}"
        alone = NoisyRow(label, "alone", quiet.name, tenants.QUIET_RPS)
        beside = NoisyRow(label, "beside noisy", quiet.name, tenants.QUIET_RPS)
        loud = NoisyRow(label, "beside noisy", noisy.name, noisy_rate)
        rows = [alone, beside, loud]
        self.noisy_rows += rows
        log(f"== noisy neighbour on {label}: ratelimitd {transport} workers={workers}")
        try:
            store = store_of()
        except HarnessError as exc:
            for row in rows:
                row.error = str(exc).splitlines()[0]
                row.skipped = isinstance(exc, UnavailableError)
            log(f"   not run: {exc}")
            return

        def measure(server: Server, scenario: Scenario, row: NoisyRow) -> None:
            self.noisy_runs(server, store, alone, beside, loud)

        self._on_server(
            f"   ratelimitd {transport} workers={workers}",
            self._ratelimitd_starter(transport, workers, config, store.url),
            [(quiet, alone)],
            measure,
        )
        for row in (beside, loud):
            if row.result is None and row.error is None:
                row.error = alone.error or "not run"

    def noisy_runs(
        self, server: Server, store: Store, alone: NoisyRow, beside: NoisyRow, loud: NoisyRow
    ) -> None:
        """Warm up, then the quiet tenant alone, then beside the noisy one; fill the rows."""
        args = self.args
        quiet, noisy = self.scenarios
        tag = "cluster" if isinstance(store, RedisCluster) else "redis"
        quiet_rps = tenants.QUIET_RPS / args.clients
        noisy_rps = loud.asked_rate / args.clients
        server.check_alive()
        if args.warmup > 0:
            self._load(server, quiet, f"{tag}-warmup", args.warmup, quiet_rps)

        store.flushall()
        before = self._noisy_counters(server, store)
        alone.result = self._load(server, quiet, f"{tag}-alone", args.duration, quiet_rps)
        self._noisy_account(server, store, before, [alone], {})
        result = alone.result
        log(f"   quiet alone: p50 {result.p50_ms or 0:6.2f} ms  p99 {result.p99_ms or 0:6.2f} ms")

        store.flushall()
        before = self._noisy_counters(server, store)
        running = self._start_load(
            server, noisy, f"{tag}-noisy", args.duration + 2 * tenants.NOISY_LEAD_S, noisy_rps
        )
        try:
            time.sleep(tenants.NOISY_LEAD_S)
            beside.result = self._load(server, quiet, f"{tag}-beside", args.duration, quiet_rps)
            # What each tenant is answered, over a real gRPC client, while the noisy one still
            # sends (NOISY_LEAD_S more): one call each, counted as decisions like the rest.
            probes = {}
            for row, scenario in ((beside, quiet), (loud, noisy)):
                probes[row.tenant] = checked = probe(server, scenario.messages)
                row.notes.append(f"probe at the end of the run: {checked.summary()}")
                row.problems += _probe_problems("probe", checked, scenario, True)
        finally:
            loud.result = running.finish()
        self._noisy_account(server, store, before, [beside, loud], probes)
        server.check_alive()
        if alone.result.p99_ms and beside.result.p99_ms:
            beside.ratio = beside.result.p99_ms / alone.result.p99_ms
        log(
            f"   quiet beside noisy: p50 {beside.result.p50_ms or 0:6.2f} ms  "
            f"p99 {beside.result.p99_ms or 0:6.2f} ms; noisy admitted {loud.admitted} of "
            f"{loud.result.done}"
        )

    def _noisy_counters(
        self, server: Server, store: Store
    ) -> tuple[metrics.Counts, list[RedisCounters]]:
        """ratelimitd's counters, and each Redis node's."""
        assert server.metrics_url is not None
        nodes = store.servers if isinstance(store, RedisCluster) else [store]
        return metrics.scrape(server.metrics_url), [node.counters() for node in nodes]

    def _noisy_account(
        self,
        server: Server,
        store: Store,
        before: tuple[metrics.Counts, list[RedisCounters]],
        rows: Sequence[NoisyRow],
        probes: dict[str, ProbeResult],
    ) -> None:
        """Each tenant's decisions from ratelimitd's counters (each tenant's plan is a rule
        of its own), less those of its probe (`probes`, by tenant) during the run, checked;
        Redis round trips per decision of the run."""
        assert server.metrics_url is not None
        counts, nodes_before = before
        results = [row.result for row in rows if row.result is not None]
        sent = sum(probed.sent for probed in probes.values())
        accounting = metrics.account(server.metrics_url, counts, results, sent)
        _, nodes_after = self._noisy_counters(server, store)
        calls = [
            a.script_calls - b.script_calls for a, b in zip(nodes_after, nodes_before, strict=True)
        ]
        decisions = accounting.counts.decided()
        accounting.check(rows[0].problems, rows[0].warnings, "run")
        rows[0].notes.append(f"run: {accounting.summary()}")
        if isinstance(store, RedisCluster):
            where = ", ".join(
                f"{row.tenant} on node {store.node_of(f'bench:tenant={row.tenant}') + 1}"
                for row in rows
            )
            rows[0].notes.append(
                f"Redis script calls per node: {', '.join(f'{c:,}' for c in calls)} ({where})"
            )
        for row in rows:
            assert row.result is not None
            plan = tenants.NOISY_TENANTS[row.tenant]
            row.redis_rt = sum(calls) / decisions if decisions else None
            probed = probes.get(row.tenant, ProbeResult(0, 0, 0, []))
            row.admitted = accounting.counts.decided(
                rule=plan, results=("within_limit", "near_limit")
            ) - (probed.answered - probed.over_limit)
            row.cache_hits = accounting.counts.decided(rule=plan, results=("local_cache_hit",))
            row.rejected = (
                accounting.counts.decided(
                    rule=plan, results=("over_limit", "local_cache_hit", "failure_denied")
                )
                - probed.over_limit
            )
            row.problems += _load_problems(row.result, self.bodies[row.tenant])
            done, started = row.result.done or 0, row.result.started or 0
            if row.tenant == tenants.QUIET:
                # Every request; those cut off in flight at the end may or may not be decided.
                row.expected = f"{done:,}" + (f" to {started:,}" if started > done else "")
                if not done <= row.admitted <= started or row.rejected:
                    row.problems.append(
                        f"{row.admitted:,} admitted, {row.rejected:,} rejected of {done:,} sent"
                    )
                continue
            # A full bucket of NOISY_BURST, refilled at NOISY_RATE_PER_S while the load lasts.
            expected = tenants.NOISY_BURST + tenants.NOISY_RATE_PER_S * row.result.duration_s
            row.expected = f"≈ {expected:,.0f}"
            if row.admitted > expected + tenants.NOISY_RATE_PER_S:
                row.problems.append(f"admitted {row.admitted:,}: more than its quota")
            if done and row.cache_hits:
                share = row.cache_hits / done
                row.notes.append(f"the local over-limit cache answered {share:.1%} of its requests")

    def _on_server(
        self,
        title: str,
        start: Callable[[], Server],
        work: Sequence[tuple[Scenario, AnyRow]],
        measure: Callable[[Server, Scenario, AnyRow], None],
    ) -> None:
        """Start a server, measure each scenario's row on it, stop it. A failure is recorded
        in the rows it prevented, and the run goes on with the next server."""
        log(f"== {title}")
        try:
            server = start()
        except HarnessError as exc:
            for _, row in work:
                _record_error(row, exc)
            log(f"   not run: {exc}")
            return
        try:
            for scenario, row in work:
                self._guarded(row, scenario, functools.partial(measure, server, scenario, row))
        finally:
            for proc in server.procs:
                self.supervisor.stop(proc)

    # -- one row ------------------------------------------------------------------------

    def _redis_client(self, server: Server) -> tuple[redis.Redis | None, int | None]:
        """The Redis whose counters belong to this server's rows, and its pid if ours."""
        if server.label == "ratelimitd" and self.redis is not None:
            return self.redis.client, self.redis.proc.pid
        if server.label == "target" and self.target_redis is not None:
            return self.target_redis, None
        return None, None

    def _before(self, server: Server) -> Before:
        client, pid = self._redis_client(server)
        counters = redis_counters(client, pid) if client else None
        return Before(server.cpu_s(), counters, MachineCpu.now(), server.process_cpu())

    def _start_scenario(self, server: Server, scenario: Scenario) -> BodyFiles:
        """The scenario's bodies, once it can run and the server is alive; a clean Redis for
        ratelimitd."""
        bodies = self.bodies[scenario.name]
        if bodies.count > 1 and self.shim is None:
            raise HarnessError("needs the body shim (see notes)")
        server.check_alive()
        if server.label == "ratelimitd" and self.redis is not None:
            self.redis.client.flushall()
        return bodies

    def _h2load(self, scenario: Scenario) -> H2Load:
        """h2load's settings for `scenario`: --clients, --streams and --threads, unless the
        scenario has a load shape of its own (single-connection: 1 connection, 128 streams)."""
        if scenario.clients is None and scenario.streams is None:
            return self.h2load
        clients = scenario.clients or self.args.clients
        streams = scenario.streams or self.args.streams
        return H2Load(clients, streams, min(self.args.threads, clients))

    def _load(
        self, server: Server, scenario: Scenario, name: str, duration: float, rps: float | None
    ) -> LoadResult:
        """One h2load run of `scenario` against `server` (`rps`: per client)."""
        return self._start_load(server, scenario, name, duration, rps).finish()

    def _start_load(
        self, server: Server, scenario: Scenario, name: str, duration: float, rps: float | None
    ) -> RunningLoad:
        """Start an h2load run of `scenario` against `server` (`rps`: per client)."""
        return self._h2load(scenario).start(
            self.supervisor,
            host=server.host,
            port=server.port,
            bodies=self.bodies[scenario.name],
            duration_s=duration,
            shim=self.shim,
            rps_per_client=rps,
            method=scenario.method,
            name=f"h2load-{server.label}-{server.transport}-w{server.workers}-"
            f"{scenario.name}-{name}",
        )

    def _warm_up_and_probe(
        self,
        server: Server,
        scenario: Scenario,
        load: Callable[[str, float], LoadResult],
        problems: list[str],
        notes: list[str],
    ) -> tuple[LoadResult | None, ProbeResult]:
        """--warmup seconds of full load (if any), then a probe of the scenario's decisions,
        its failed checks added to `problems`."""
        warm = None
        if self.args.warmup > 0:
            warm = load("warmup", self.args.warmup)
            if warm.succeeded == 0:
                raise HarnessError(
                    f"no successful request during warm-up ({warm.failed} failed): "
                    f"does {server.host}:{server.port} answer gRPC?"
                )
        checked = probe(server, _sample(scenario.messages, PROBE_SAMPLE), method=scenario.method)
        notes.append(f"probe after warm-up: {checked.summary()}")
        problems += _probe_problems("probe", checked, scenario, server.label != "constant")
        return warm, checked

    def measure(self, server: Server, scenario: Scenario, row: Row, *, half: bool) -> None:
        """One round of `row`, then (`half`) its half-load run."""
        self.measure_round(server, scenario, row)
        if half:
            self.measure_half(server, scenario, row)

    def measure_round(self, server: Server, scenario: Scenario, row: Row, number: int = 1) -> None:
        """Warm up, probe, measure at full load; add the Round to `row`. With several rounds,
        what this one adds to the row's problems, warnings and notes says which round."""
        if scenario.is_check and server.label == "target":
            raise UnavailableError(
                "`check` needs ratelimitd's extract: section (bench/config/authz.yaml)"
            )
        marks = [(row.problems, len(row.problems)), (row.warnings, len(row.warnings))]
        marks.append((row.notes, len(row.notes)))
        try:
            self._measure_round(server, scenario, row, number)
        finally:
            if self.args.rounds > 1:
                for items, mark in marks:
                    items[mark:] = [f"round {number}: {item}" for item in items[mark:]]

    def _measure_round(self, server: Server, scenario: Scenario, row: Row, number: int) -> None:
        bodies = self._start_scenario(server, scenario)
        served_since_flush = 0
        suffix = f"-r{number}" if self.args.rounds > 1 else ""

        def load(name: str, duration: float, rps: float | None = None) -> LoadResult:
            nonlocal served_since_flush
            result = self._load(server, scenario, name + suffix, duration, rps)
            served_since_flush += result.shim_served or 0
            return result

        _, checked = self._warm_up_and_probe(server, scenario, load, row.problems, row.notes)

        counts = metrics.settled_scrape(server.metrics_url) if server.metrics_url else None
        before = self._before(server)
        full = load("full", self.args.duration)
        after = self._before(server)
        server.check_alive()
        measured = Round(number, full)
        row.rounds.append(measured)
        if server.metrics_url and counts is not None:
            accounting = metrics.account(server.metrics_url, counts, [full])
            accounting.check(row.problems, row.warnings)
            row.notes.append(f"full load, by ratelimitd's counters: {accounting.summary()}")
        if before.server_cpu is not None and after.server_cpu is not None:
            measured.server_cpu_s = after.server_cpu - before.server_cpu
        _worker_cpu(measured, before.processes, after.processes, row.warnings, row.notes)
        if before.redis is not None and after.redis is not None:
            if server.label == "ratelimitd":
                measured.redis_calls = after.redis.script_calls - before.redis.script_calls
            else:  # a target: every command, less our own INFO call
                measured.redis_calls = after.redis.commands - before.redis.commands - 1
                row.notes.append("Redis RT/decision counts every command of the target's Redis")
            if after.redis.cpu_s is not None and before.redis.cpu_s is not None:
                measured.redis_cpu_s = after.redis.cpu_s - before.redis.cpu_s
        if measured.server_cpu_s is not None:
            ours = measured.server_cpu_s + (measured.redis_cpu_s or 0) + full.client_cpu_s
            _noise(row.warnings, row.notes, before.machine, after.machine, ours, full.duration_s)
        row.problems += _load_problems(full, bodies)
        rounds = f"  (round {number}/{self.args.rounds})" if self.args.rounds > 1 else ""
        log(
            f"   {scenario.name:9} {server.label:10} {full.rate:9,.0f}/s  "
            f"p50 {full.p50_ms or 0:6.2f} ms  p99 {full.p99_ms or 0:6.2f} ms{rounds}"
        )
        if scenario.name == "distinct" and server.label == "ratelimitd" and self.redis:
            self._check_distinct(row, scenario, served_since_flush, checked.sent)

    def measure_half(
        self, server: Server, scenario: Scenario, row: Row, rate: float | None = None
    ) -> None:
        """Once after the rounds: --duration seconds at half the row's (median) decisions/s
        (or half of `rate`), for the p99 of a server that is not saturated."""
        rate = rate or row.rate
        if not rate:
            return
        server.check_alive()
        target_rate = rate / 2
        clients = self._h2load(scenario).clients
        row.half = self._load(server, scenario, "half", self.args.duration, target_rate / clients)
        row.notes.append(
            f"half load: asked {target_rate:,.0f}/s, got {row.half.rate:,.0f}/s, "
            f"p50 {row.half.p50_ms or 0:.2f} ms"
        )
        if row.half.failed:
            row.problems.append(f"{row.half.failed} failed requests at half load")
        log(f"   {'':9} {'@50%':10} {row.half.rate:9,.0f}/s  p99 {row.half.p99_ms or 0:6.2f} ms")

    def _check_distinct(self, row: Row, scenario: Scenario, served: int, probes: int) -> None:
        """Every request of `distinct` must have hit its own counter: Redis should hold one
        key per body sent (until the cycle wraps), give or take requests cut off in flight."""
        assert self.redis is not None
        keys = int(self.redis.client.dbsize())
        expected = min(scenario.distinct, served)
        load = self._h2load(scenario)
        slack = 3 * load.clients * load.streams
        row.notes.append(
            f"Redis holds {keys:,} keys after {served:,} requests over "
            f"{scenario.distinct:,} distinct keys"
        )
        if not expected - slack <= keys <= min(scenario.distinct, served + probes):
            row.problems.append(f"{keys:,} keys in Redis, expected about {expected:,}")

    def soak(self, server: Server, scenario: Scenario, row: SoakRow) -> None:
        """Warm up and probe as `measure` does, then --soak minutes of steady load with the
        memory sampled and the decisions probed all along; fill `row`."""
        args = self.args
        bodies = self._start_scenario(server, scenario)
        warm, _ = self._warm_up_and_probe(
            server,
            scenario,
            lambda name, duration: self._load(server, scenario, name, duration, None),
            row.problems,
            row.notes,
        )
        if args.rps is not None:
            rate: float = args.rps
        else:
            assert warm is not None  # parse_args: --rps or a warm-up
            rate = warm.rate / 2
        row.asked_rate = rate
        log(f"   steady load: {rate:,.0f}/s for {args.soak:g} min")
        sample = _sample(scenario.messages, PROBE_SAMPLE)
        assert server.metrics_url is not None  # a ratelimitd
        counts = metrics.settled_scrape(server.metrics_url)
        with soak.Sampler(server, sample, log, scenario.method) as sampler:
            clients = self._h2load(scenario).clients
            result = self._load(server, scenario, "soak", args.soak * 60, rate / clients)
        if sampler.failure is not None:
            raise HarnessError(f"sampling failed: {sampler.failure!r}")
        server.check_alive()
        row.result = result
        row.memory = soak.MemoryGrowth.of(sampler.samples)

        row.problems += _load_problems(result, bodies)
        if result.rate < 0.9 * rate:
            row.warnings.append(f"reached {result.rate / rate:.0%} of the asked rate")
        during = ProbeResult.total(sampler.probes)
        row.notes.append(
            f"probes during the soak ({len(sampler.probes)}, every "
            f"{soak.SAMPLE_INTERVAL_S:g} s): {during.summary()}"
        )
        row.problems += _probe_problems("probes during the soak", during, scenario, True)
        # h2load's requests and the probes', every one accounted for by ratelimitd.
        accounting = metrics.account(server.metrics_url, counts, [result], during.sent)
        row.errors = accounting.errors
        accounting.check(row.problems, row.warnings)
        row.notes.append(f"calls during the soak, by ratelimitd's counters: {accounting.summary()}")
        changes = sampler.tree_changes()
        if changes:
            row.problems.append("processes changed (a worker restarted?): " + "; ".join(changes))
        row.notes.append(f"RSS by process, start → end: {soak.per_process(sampler.samples)}")
        row.notes.append(
            f"RSS every {soak.SAMPLE_INTERVAL_S:g} s, MiB: {soak.curve(sampler.samples)}"
        )
        memory = row.memory
        log(
            f"   {result.rate:,.0f}/s, {result.succeeded:,} requests, "
            f"{row.errors:,} errors; RSS "
            f"{memory.start:.1f} -> {memory.end:.1f} MiB (max {memory.peak:.1f}, "
            f"{memory.growth:+.1f} MiB, {memory.growth_pct:+.1f}%; 2nd half "
            f"{memory.second_half:+.1f} MiB)"
        )

    def compute_ratios(self) -> None:
        """Per round, ratelimitd's (or the target's) decisions/s ÷ the constant server's of
        the same round, transport, workers and scenario (for a target: the grpc 1-worker
        constant server); each row's ratio is the median of its rounds'. With several rounds,
        each row's notes give its figures by round."""
        constants = {
            (r.transport, r.workers, r.scenario): r for r in self.rows if r.server == "constant"
        }
        for row in self.rows:
            base = constants.get((row.transport, row.workers, row.scenario))
            if row.server != "constant" and base is not None:
                partner = {r.number: r for r in base.rounds}
                for measured in row.rounds:
                    other = partner.get(measured.number)
                    if other is not None and other.full.rate > 0:
                        measured.ratio = measured.full.rate / other.full.rate
                if row.ratios:
                    row.ratio = statistics.median(row.ratios)
            if self.args.rounds > 1:
                row.notes += _round_notes(row)
        self._compare_check()

    def _compare_check(self) -> None:
        """`check` (ext_authz Check, one descriptor by extract) ÷ `one` (ShouldRateLimit, the
        same descriptor), per server, transport and workers of the same run, in the notes."""
        rates = {
            (r.server, r.transport, r.workers, r.scenario): r.rate
            for r in self.rows
            if r.rate and not r.problems and not r.error
        }
        for row in self.rows:
            if row.scenario != "check" or not row.rounds:
                continue
            one = rates.get((row.server, row.transport, row.workers, "one"))
            check = rates.get((row.server, row.transport, row.workers, "check"))
            if one is None or check is None:
                continue
            self.notes.append(
                f"Check ÷ ShouldRateLimit ({row.server} {row.transport} w{row.workers}): "
                f"{check:,.0f} / {one:,.0f} decisions/s = {check / one:.2f} (`check` ÷ `one`)"
            )

    # -- end to end ---------------------------------------------------------------------

    def run_e2e(self) -> None:
        """wrk through Envoy: no filter, the rate limit filter, rate_limit_quota, per RLS
        server."""
        args = self.args
        if args.target is not None:
            host, port = args.target
            target = Server("target", "grpc", 1, host, port, pids=list(args.target_pid))
            self._e2e(f"target {host}:{port}", lambda: target, stop=False)
            return
        for workers in args.workers:
            for transport in args.transports:
                start = self._ratelimitd_starter(transport, workers, CONFIG / "edge.yaml")

                self._e2e(f"ratelimitd {transport} w{workers}", start, stop=True)

    def _e2e(self, name: str, start: Callable[[], Server], *, stop: bool) -> None:
        rows = [E2ERow(name, filter_name) for filter_name in e2e.FILTERS]
        self.e2e_rows += rows
        log(f"== e2e {name}")
        server: Server | None = None
        envoy: e2e.Envoy | None = None
        wrk = Wrk(self.args.wrk_connections, self.args.wrk_threads)
        try:
            server = start()
            if self.redis is not None and server.label == "ratelimitd":
                self.redis.client.flushall()
            envoy = e2e.start_envoy(
                self.supervisor,
                server.host,
                server.port,
                concurrency=self.args.envoy_concurrency,
            )
            tag = name.replace(" ", "-").replace(":", "-")
            for row in rows:
                url = envoy.url(row.filter)
                kind = row.filter
                if self.args.warmup > 0:
                    wrk.run(
                        self.supervisor,
                        url=url,
                        headers=e2e.HEADERS,
                        duration_s=self.args.warmup,
                        name=f"wrk-{tag}-{kind}-warmup",
                    )
                before_stats = e2e.ratelimit_stats(envoy)
                before = self._before(server)
                envoy_before = envoy.cpu_s()
                row.result = wrk.run(
                    self.supervisor,
                    url=url,
                    headers=e2e.HEADERS,
                    duration_s=self.args.duration,
                    name=f"wrk-{tag}-{kind}",
                )
                row.envoy_cpu_s = envoy.cpu_s() - envoy_before
                after = self._before(server)
                after_stats = e2e.ratelimit_stats(envoy)
                server.check_alive()
                if row.filter != "off" and before.server_cpu is not None and after.server_cpu:
                    row.rls_cpu_s = after.server_cpu - before.server_cpu
                if row.filter != "off" and before.redis is not None and after.redis is not None:
                    row.redis_calls = after.redis.script_calls - before.redis.script_calls
                if before.server_cpu is not None and after.server_cpu is not None:
                    ours = row.envoy_cpu_s + row.result.client_cpu_s
                    ours += after.server_cpu - before.server_cpu
                    if before.redis and after.redis and before.redis.cpu_s and after.redis.cpu_s:
                        ours += after.redis.cpu_s - before.redis.cpu_s
                    _noise(
                        row.warnings,
                        [],
                        before.machine,
                        after.machine,
                        ours,
                        row.result.duration_s,
                    )
                self._e2e_checks(row, before_stats, after_stats)
                log(
                    f"   filter {kind:9} {row.result.rate:9,.0f}/s  "
                    f"p50 {row.result.p50_ms or 0:6.2f} ms  p99 {row.result.p99_ms or 0:6.2f} ms"
                )
            off, *filtered = rows
            for on in filtered:
                if off.result and on.result and off.result.rate > 0:
                    on.ratio = on.result.rate / off.result.rate
        except (HarnessError, redis.RedisError, OSError) as exc:
            for row in rows:
                if row.result is None:
                    row.error = str(exc).splitlines()[0]
                    row.skipped = isinstance(exc, UnavailableError)
            log(f"   not run: {exc}")
        finally:
            if envoy is not None:
                self.supervisor.stop(envoy.proc)
            if server is not None and stop:
                for proc in server.procs:
                    self.supervisor.stop(proc)

    def _e2e_checks(self, row: E2ERow, before: dict[str, int], after: dict[str, int]) -> None:
        """No errors; with the rate limit filter, every request decided by the RLS server
        (Envoy's ratelimit.ok counts them), none let through by failure mode."""
        assert row.result is not None
        if row.result.failed:
            row.problems.append(f"{row.result.failed} errors or non-2xx responses")
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        if row.filter != "ratelimit":
            return
        decided = delta.get("ok", 0) + delta.get("over_limit", 0)
        if decided < row.result.succeeded:
            row.problems.append(
                f"Envoy counted {decided} rate limit decisions for {row.result.succeeded} "
                f"requests (error {delta.get('error', 0)}, "
                f"failure_mode_allowed {delta.get('failure_mode_allowed', 0)})"
            )


@dataclass(frozen=True)
class _Subject:
    """A server of a group measured in alternating rounds (Bench._measure_group)."""

    label: str  # constant, ratelimitd, target
    start: Callable[[], Server]
    half: bool  # with a half-load run after the rounds


def _record_error(
    row: AnyRow, exc: HarnessError | redis.RedisError | OSError, tag: str = ""
) -> None:
    """Why `row` was (or some of its rounds were) not measured."""
    row.error = tag + str(exc).splitlines()[0]
    row.skipped = isinstance(exc, UnavailableError)


def _worker_cpu(
    measured: Round,
    before: ProcessCpu | None,
    after: ProcessCpu | None,
    warnings: list[str],
    notes: list[str],
) -> None:
    """Each worker process's CPU seconds during the run, in start order (lowest pid first),
    and the supervisor's; a warning when the workers changed (one restarted: the time of one
    that exited is lost)."""
    if before is None or after is None:
        return
    pids = sorted(before.workers.keys() | after.workers.keys())
    measured.worker_cpu_s = [
        max(
            0.0, after.workers.get(pid, before.workers.get(pid, 0.0)) - before.workers.get(pid, 0.0)
        )
        for pid in pids
    ]
    if before.supervisor_s is not None and after.supervisor_s is not None:
        measured.supervisor_cpu_s = after.supervisor_s - before.supervisor_s
    if before.workers.keys() != after.workers.keys():
        warnings.append("worker processes changed during the run (one restarted?)")
    if len(pids) > 1:
        supervisor = measured.supervisor_cpu_s
        notes.append(
            "worker CPU s (start order): "
            + " / ".join(f"{cpu:.2f}" for cpu in measured.worker_cpu_s)
            + (f", supervisor {supervisor:.2f}" if supervisor is not None else "")
            + f" = {shares_text(measured.worker_shares)}"
        )


def _round_notes(row: Row) -> list[str]:
    """A row's figures by round: decisions/s, CPU s/1k, and the ratio with its median and
    range (each round's worker CPU is in that round's notes)."""
    if not row.rounds:
        return []

    def by_round(figures: Sequence[float | None], digits: int) -> str:
        return ", ".join("—" if f is None else f"{f:,.{digits}f}" for f in figures)

    rounds = row.rounds
    notes = [
        f"by round ({', '.join(str(r.number) for r in rounds)}): decisions/s "
        f"{by_round([r.full.rate for r in rounds], 0)}; CPU s/1k "
        f"{by_round([r.per_1k(r.server_cpu_s) for r in rounds], 3)}"
    ]
    ratios = row.ratios
    if ratios and row.ratio is not None:
        notes.append(
            f"vs constant by round: {by_round(ratios, 2)}; median {row.ratio:.2f}, range "
            f"{min(ratios):.2f} to {max(ratios):.2f}"
        )
    return notes


NOISE_LIMIT = 0.25  # of one core: above this, other processes may have skewed the run


def _noise(
    warnings: list[str],
    notes: list[str],
    before: MachineCpu,
    after: MachineCpu,
    ours_s: float,
    duration_s: float,
) -> None:
    """Note how much CPU other processes, and the hypervisor (steal), took during a run;
    warn when either may have skewed it."""
    if duration_s <= 0:
        return
    other = max(0.0, (after.tasks - before.tasks - ours_s) / duration_s)
    steal = max(0.0, (after.steal - before.steal) / duration_s)
    notes.append(f"other processes used {other:.0%} of a core, steal {steal:.0%}")
    if other > NOISE_LIMIT:
        warnings.append(f"noisy: other processes used {other:.0%} of a core")
    if steal > NOISE_LIMIT:
        warnings.append(f"noisy: {steal:.0%} of a core stolen by the hypervisor")


def _probe_problems(
    what: str, checked: ProbeResult, scenario: Scenario, decides: bool
) -> list[str]:
    """The failed checks of a probe: gRPC errors and, from a server that decides (not a
    constant one), a share of OVER_LIMIT answers off the scenario's."""
    problems = []
    if checked.errors:
        problems.append(f"{what}: {len(checked.errors)} gRPC errors")
    if decides:
        share = checked.over_limit / checked.answered if checked.answered else 0.0
        if abs(share - scenario.over_limit_share) > 0.15:
            problems.append(
                f"{what}: {share:.0%} OVER_LIMIT, expected {scenario.over_limit_share:.0%}"
            )
    return problems


def _load_problems(result: LoadResult, bodies: BodyFiles) -> list[str]:
    """The failed checks of an h2load run: failed requests, none that succeeded, a body shim
    that served fewer bodies than there were requests."""
    problems = []
    if result.failed:
        problems.append(f"{result.failed} failed requests")
    if result.succeeded == 0:
        problems.append("no successful request")
    if bodies.count > 1 and (result.shim_served or 0) < result.succeeded:
        problems.append(
            f"body shim served {result.shim_served} bodies for {result.succeeded} requests"
        )
    return problems


def _sample(messages: Sequence[bytes], size: int) -> list[bytes]:
    """All messages, or `size` of them spread evenly."""
    if len(messages) <= size:
        return list(messages)
    step = len(messages) / size
    return [messages[int(i * step)] for i in range(size)]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 if every row was measured and passed its checks."""
    args = parse_args(argv)
    missing = missing_tools(args)
    if missing:
        packages = " ".join(TOOLS[t] for t in missing)
        print(
            f"bench: missing {', '.join(missing)}. Install (Debian/Ubuntu):\n"
            f"  apt-get install {packages}\n"
            "(all of the harness's tools: apt-get install nghttp2-client wrk redis-server)",
            file=sys.stderr,
        )
        return 2
    install_signal_handlers()
    workdir = Path(tempfile.mkdtemp(prefix="ratelimitd-bench-"))
    supervisor = Supervisor(workdir)
    bench = Bench(args, supervisor)
    keep = args.keep_workdir
    try:
        bench.run()
    except KeyboardInterrupt as exc:
        log(f"bench: interrupted ({str(exc) or 'Ctrl-C'}); stopping everything")
        keep = True
        return 130
    except HarnessError as exc:
        log(f"bench: {exc}")
        keep = True
        return 1
    finally:
        # A second Ctrl-C must not interrupt the cleanup itself.
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
        supervisor.stop_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if keep or _failed(bench):
            log(f"bench: logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    labelled: list[Row | SoakRow | ConfigRow | NoisyRow] = [
        *bench.config_rows,
        *bench.rows,
        *bench.soak_rows,
        *bench.noisy_rows,
    ]
    section = report.record(
        settings=bench.settings(),
        tables=bench.tables(),
        notes=bench.notes
        + [f"{row.label}: {'; '.join(row.notes)}" for row in labelled if row.notes],
        envoy=e2e.ENVOY,
    )
    print(section)
    if args.write_results:
        report.append(args.results, section)
        log(f"bench: appended to {args.results}")
    return 1 if _failed(bench) else 0


def _failed(bench: Bench) -> bool:
    """True if a row failed a check or could not be measured (not: was not available)."""
    every: list[Row | E2ERow | SoakRow | ConfigRow | ReloadRow | NoisyRow] = [
        *bench.rows,
        *bench.e2e_rows,
        *bench.soak_rows,
        *bench.config_rows,
        *bench.reload_rows,
        *bench.noisy_rows,
    ]
    return any(r.problems or (r.error and not r.skipped) for r in every)
