"""The benchmark run: what `bench/run.py` does (see bench/README.md).

For each worker count and transport: the constant-answer server of that transport, then
ratelimitd (or, with --target, another RLS server), each through every scenario: a warm-up
run, a gRPC probe of what it answers, the measured run at full load, and a second run at
half the measured rate for its p99. Then, with --e2e, Envoy with and without the filter.

With --soak MINUTES instead: per worker count, transport and scenario, a fresh ratelimitd
warmed up and probed the same way, then MINUTES of steady load with its memory sampled.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import redis

from bench import e2e, report, soak
from bench.load import Bodies as BodyFiles
from bench.load import H2Load, LoadResult, Wrk, build_shim
from bench.procs import (
    HarnessError,
    MachineCpu,
    Supervisor,
    UnavailableError,
    install_signal_handlers,
    load_average,
)
from bench.report import E2ERow, Row, SoakRow
from bench.scenarios import DEFAULT_DISTINCT_KEYS, NAMES, Scenario, build
from bench.servers import (
    ProbeResult,
    RedisCounters,
    RedisServer,
    Server,
    probe,
    redis_counters,
    serve_flags,
    start_constant,
    start_ratelimitd,
    start_redis,
)

BENCH = Path(__file__).resolve().parent
CONFIG = BENCH / "config"
RESULTS = BENCH / "RESULTS.md"
TRANSPORTS = ("grpc", "asgi")
# --soak's defaults: the faster transport (README.md, Speed) and the plainest request.
SOAK_TRANSPORTS = ["asgi"]
SOAK_SCENARIOS = ["one"]
PROBE_SAMPLE = 20
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
AnyRow = TypeVar("AnyRow", Row, SoakRow)
# Debian package of each tool the harness runs.
TOOLS = {"h2load": "nghttp2-client", "wrk": "wrk", "redis-server": "redis-server"}


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
        help="comma-separated: grpc, asgi (default: both; with --soak: asgi)",
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
        help=f"comma-separated: {', '.join(NAMES)}, or none (default: all; with --soak: one)",
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
        "--rps",
        type=float,
        help="--soak: requests per second in all (default: half of the warm-up's rate)",
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
    if args.transports is None:
        args.transports = SOAK_TRANSPORTS if args.soak else list(TRANSPORTS)
    if args.scenarios is None:
        args.scenarios = SOAK_SCENARIOS if args.soak else list(NAMES)
    if args.soak is not None:
        if args.soak <= 0:
            parser.error("--soak needs a number of minutes above 0")
        if args.target is not None or args.e2e:
            parser.error("--soak measures ratelimitd: not with --target or --e2e")
        if not args.scenarios:
            parser.error("--soak needs a scenario")
        if args.rps is None and args.warmup <= 0:
            parser.error("--soak needs --rps or a --warmup to measure the rate from")
    if args.rps is not None and (args.soak is None or args.rps <= 0):
        parser.error("--rps is a rate above 0 for --soak")
    if args.duration < 1 or args.warmup < 0:
        parser.error("--duration must be at least 1 s and --warmup at least 0")
    if args.clients < 1 or args.streams < 1 or args.threads < 1 or args.threads > args.clients:
        parser.error("need 1 <= --threads <= --clients and --streams >= 1")
    if not args.scenarios and not args.e2e:
        parser.error("nothing to do: no scenarios and no --e2e")
    if args.distinct_keys < 2:
        parser.error("--distinct-keys must be at least 2")
    return args


def missing_tools(args: argparse.Namespace) -> list[str]:
    """The external tools this run needs that are not on PATH."""
    needed = ["h2load"] if args.scenarios else []
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


class Bench:
    """One benchmark run: starts, measures and stops everything; collects rows and notes."""

    def __init__(self, args: argparse.Namespace, supervisor: Supervisor) -> None:
        self.args = args
        self.supervisor = supervisor
        self.h2load = H2Load(args.clients, args.streams, args.threads)
        self.rows: list[Row] = []
        self.e2e_rows: list[E2ERow] = []
        self.soak_rows: list[SoakRow] = []
        self.notes: list[str] = []
        self.redis: RedisServer | None = None
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
        if args.soak is not None:
            for workers in args.workers:
                for transport in args.transports:
                    self.soak_ratelimitd(transport, workers)
            return
        if self.scenarios:
            for workers in args.workers:
                for transport in args.transports:
                    self.measure_constant(transport, workers)
                    if args.target is None:
                        self.measure_ratelimitd(transport, workers)
            if args.target is not None:
                self.measure_target()
            self.compute_ratios()
        if args.e2e:
            self.run_e2e()

    def settings(self) -> str:
        """The load settings, for the record."""
        args = self.args
        if args.soak is not None:
            rate = f"{args.rps:,.0f}/s" if args.rps else "half the warm-up's rate"
            return (
                f"soak: h2load -c {args.clients} -m {args.streams} -t {args.threads}; per row "
                f"a fresh ratelimitd, {args.warmup:g} s warm-up at full load (unmeasured), "
                f"then {args.soak:g} min at {rate} (--rps); RSS (VmRSS summed over "
                f"ratelimitd's process tree) and a gRPC probe every {soak.SAMPLE_INTERVAL_S:g} s"
            )
        text = (
            f"h2load -c {args.clients} -m {args.streams} -t {args.threads}; per row "
            f"{args.warmup:g} s warm-up (unmeasured), {args.duration:g} s measured"
        )
        if args.half_load:
            text += ", then p99 @50%: the same for --duration at half the measured rate (--rps)"
        if args.e2e:
            text += (
                f"; e2e: wrk -c {args.wrk_connections} -t {args.wrk_threads}, "
                f"Envoy --concurrency {args.envoy_concurrency}"
            )
        return text

    # -- servers ------------------------------------------------------------------------

    def measure_constant(self, transport: str, workers: int) -> None:
        """The constant-answer server of `transport` through every scenario."""
        self._measure_all(
            "constant",
            transport,
            workers,
            lambda: start_constant(self.supervisor, transport=transport, workers=workers),
            half=False,
        )

    def _ratelimitd_starter(
        self, transport: str, workers: int, config: str
    ) -> Callable[[], Server]:
        """Starts ratelimitd on this run's Redis with bench/config/<config>."""
        assert self.redis is not None
        redis_url = self.redis.url

        def start() -> Server:
            return start_ratelimitd(
                self.supervisor,
                transport=transport,
                workers=workers,
                flags=self.flags,
                redis_url=redis_url,
                config=CONFIG / config,
                extra_args=self.args.ratelimitd_arg,
            )

        return start

    def measure_ratelimitd(self, transport: str, workers: int) -> None:
        """ratelimitd through every scenario."""
        start = self._ratelimitd_starter(transport, workers, "bench.yaml")

        self._measure_all("ratelimitd", transport, workers, start, half=self.args.half_load)

    def measure_target(self) -> None:
        """The --target server through every scenario (nothing started, nothing flushed)."""
        host, port = self.args.target

        def start() -> Server:
            return Server("target", "grpc", 1, host, port, pids=list(self.args.target_pid))

        self._measure_all("target", "grpc", 1, start, half=self.args.half_load)

    def _measure_all(
        self,
        label: str,
        transport: str,
        workers: int,
        start: Callable[[], Server],
        *,
        half: bool,
    ) -> None:
        """Every scenario on one server, a row each."""
        rows = [Row(transport, workers, s.name, label) for s in self.scenarios]
        self.rows += rows

        def measure(server: Server, scenario: Scenario, row: Row) -> None:
            self.measure(server, scenario, row, half=half)

        self._on_server(
            f"{label} {transport} workers={workers}",
            start,
            list(zip(self.scenarios, rows, strict=True)),
            measure,
        )

    def soak_ratelimitd(self, transport: str, workers: int) -> None:
        """A soak per scenario, each on a fresh ratelimitd: its memory starts from scratch."""
        start = self._ratelimitd_starter(transport, workers, "bench.yaml")
        for scenario in self.scenarios:
            row = SoakRow(transport, workers, scenario.name, self.args.soak)
            self.soak_rows.append(row)
            title = f"soak ratelimitd {transport} workers={workers} {scenario.name}"
            self._on_server(title, start, [(scenario, row)], self.soak)

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
                row.error = str(exc).splitlines()[0]
                row.skipped = isinstance(exc, UnavailableError)
            log(f"   not run: {exc}")
            return
        try:
            for scenario, row in work:
                try:
                    measure(server, scenario, row)
                except (HarnessError, redis.RedisError, OSError) as exc:
                    row.error = str(exc).splitlines()[0]
                    log(f"   {scenario.name}: failed: {exc}")
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
        return Before(server.cpu_s(), counters, MachineCpu.now())

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

    def _load(
        self, server: Server, scenario: Scenario, name: str, duration: float, rps: float | None
    ) -> LoadResult:
        """One h2load run of `scenario` against `server` (`rps`: per client)."""
        return self.h2load.run(
            self.supervisor,
            host=server.host,
            port=server.port,
            bodies=self.bodies[scenario.name],
            duration_s=duration,
            shim=self.shim,
            rps_per_client=rps,
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
        checked = probe(server, _sample(scenario.messages, PROBE_SAMPLE))
        notes.append(f"probe after warm-up: {checked.summary()}")
        problems += _probe_problems("probe", checked, scenario, server.label != "constant")
        return warm, checked

    def measure(self, server: Server, scenario: Scenario, row: Row, *, half: bool) -> None:
        """Warm up, probe, measure at full load, then at half load; fill `row`."""
        bodies = self._start_scenario(server, scenario)
        served_since_flush = 0

        def load(name: str, duration: float, rps: float | None = None) -> LoadResult:
            nonlocal served_since_flush
            result = self._load(server, scenario, name, duration, rps)
            served_since_flush += result.shim_served or 0
            return result

        _, checked = self._warm_up_and_probe(server, scenario, load, row.problems, row.notes)

        before = self._before(server)
        full = load("full", self.args.duration)
        after = self._before(server)
        server.check_alive()
        row.full = full
        if before.server_cpu is not None and after.server_cpu is not None:
            row.server_cpu_s = after.server_cpu - before.server_cpu
        if before.redis is not None and after.redis is not None:
            if server.label == "ratelimitd":
                row.redis_calls = after.redis.script_calls - before.redis.script_calls
            else:  # a target: every command, less our own INFO call
                row.redis_calls = after.redis.commands - before.redis.commands - 1
                row.notes.append("Redis RT/decision counts every command of the target's Redis")
            if after.redis.cpu_s is not None and before.redis.cpu_s is not None:
                row.redis_cpu_s = after.redis.cpu_s - before.redis.cpu_s
        if row.server_cpu_s is not None:
            ours = row.server_cpu_s + (row.redis_cpu_s or 0) + full.client_cpu_s
            _noise(row.warnings, row.notes, before.machine, after.machine, ours, full.duration_s)
        row.problems += _load_problems(full, bodies)
        log(
            f"   {scenario.name:9} {server.label:10} {full.rate:9,.0f}/s  "
            f"p50 {full.p50_ms or 0:6.2f} ms  p99 {full.p99_ms or 0:6.2f} ms"
        )

        if half and full.rate > 0:
            target_rate = full.rate / 2
            row.half = load("half", self.args.duration, target_rate / self.args.clients)
            row.notes.append(
                f"half load: asked {target_rate:,.0f}/s, got {row.half.rate:,.0f}/s, "
                f"p50 {row.half.p50_ms or 0:.2f} ms"
            )
            if row.half.failed:
                row.problems.append(f"{row.half.failed} failed requests at half load")
            log(
                f"   {'':9} {'@50%':10} {row.half.rate:9,.0f}/s  p99 {row.half.p99_ms or 0:6.2f} ms"
            )

        if scenario.name == "distinct" and server.label == "ratelimitd" and self.redis:
            self._check_distinct(row, scenario, served_since_flush, checked.sent)

    def _check_distinct(self, row: Row, scenario: Scenario, served: int, probes: int) -> None:
        """Every request of `distinct` must have hit its own counter: Redis should hold one
        key per body sent (until the cycle wraps), give or take requests cut off in flight."""
        assert self.redis is not None
        keys = int(self.redis.client.dbsize())
        expected = min(scenario.distinct, served)
        slack = 3 * self.args.clients * self.args.streams
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
        with soak.Sampler(server, sample, log) as sampler:
            result = self._load(server, scenario, "soak", args.soak * 60, rate / args.clients)
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
        row.errors = result.failed + len(during.errors)
        short = soak.shortfall(result, during.answer_sizes)
        if short is None:
            row.errors = None
            row.warnings.append(
                f"non-OK gRPC statuses under load not counted: {result.body_bytes} body bytes "
                f"for {result.succeeded:,} answers, probes saw {sorted(during.answer_sizes)}"
            )
        elif short.missing:
            row.errors += short.errors_at_most
            row.errors_exact = False
            text = (
                f"{short.missing:,} body bytes short of {short.answers:,} answers of "
                f"{short.size} bytes: up to {short.errors_at_most:,} non-OK gRPC statuses "
                "under load, or shorter OK answers (other decisions, or failure-mode answers "
                "after store errors)"
            )
            # One message, one full answer: errors cannot be ruled out, so the soak does not
            # pass. Several messages have answers of several sizes anyway: only a bound.
            (row.problems if scenario.distinct == 1 else row.warnings).append(text)
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
            f"{report.errors_cell(row)} errors; RSS "
            f"{memory.start:.1f} -> {memory.end:.1f} MiB (max {memory.peak:.1f}, "
            f"{memory.growth:+.1f} MiB, {memory.growth_pct:+.1f}%; 2nd half "
            f"{memory.second_half:+.1f} MiB)"
        )

    def compute_ratios(self) -> None:
        """ratelimitd (or target) rate / constant rate, same transport, workers, scenario."""
        constants = {
            (r.transport, r.workers, r.scenario): r
            for r in self.rows
            if r.server == "constant" and r.full is not None
        }
        for row in self.rows:
            if row.server == "constant" or row.full is None:
                continue
            base = constants.get((row.transport, row.workers, row.scenario))
            if base is not None and base.full is not None and base.full.rate > 0:
                row.ratio = row.full.rate / base.full.rate

    # -- end to end ---------------------------------------------------------------------

    def run_e2e(self) -> None:
        """wrk through Envoy, with and without the rate limit filter, per RLS server."""
        args = self.args
        if args.target is not None:
            host, port = args.target
            target = Server("target", "grpc", 1, host, port, pids=list(args.target_pid))
            self._e2e(f"target {host}:{port}", lambda: target, stop=False)
            return
        for workers in args.workers:
            for transport in args.transports:
                start = self._ratelimitd_starter(transport, workers, "edge.yaml")

                self._e2e(f"ratelimitd {transport} w{workers}", start, stop=True)

    def _e2e(self, name: str, start: Callable[[], Server], *, stop: bool) -> None:
        rows = [E2ERow(name, with_filter=False), E2ERow(name, with_filter=True)]
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
                url = envoy.url(row.with_filter)
                kind = "on" if row.with_filter else "off"
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
                if row.with_filter and before.server_cpu is not None and after.server_cpu:
                    row.rls_cpu_s = after.server_cpu - before.server_cpu
                if row.with_filter and before.redis is not None and after.redis is not None:
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
                    f"   filter {kind:3} {row.result.rate:9,.0f}/s  "
                    f"p50 {row.result.p50_ms or 0:6.2f} ms  p99 {row.result.p99_ms or 0:6.2f} ms"
                )
            off, on = rows
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
        """No errors; with the filter, every request decided by the RLS server (Envoy's
        ratelimit.ok counts them), none let through by failure mode."""
        assert row.result is not None
        if row.result.failed:
            row.problems.append(f"{row.result.failed} errors or non-2xx responses")
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        if not row.with_filter:
            return
        decided = delta.get("ok", 0) + delta.get("over_limit", 0)
        if decided < row.result.succeeded:
            row.problems.append(
                f"Envoy counted {decided} rate limit decisions for {row.result.succeeded} "
                f"requests (error {delta.get('error', 0)}, "
                f"failure_mode_allowed {delta.get('failure_mode_allowed', 0)})"
            )


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
    labelled: list[Row | SoakRow] = [*bench.rows, *bench.soak_rows]
    section = report.record(
        settings=bench.settings(),
        grpc_rows=bench.rows,
        e2e_rows=bench.e2e_rows,
        soak_rows=bench.soak_rows,
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
    every: list[Row | E2ERow | SoakRow] = [*bench.rows, *bench.e2e_rows, *bench.soak_rows]
    return any(r.problems or (r.error and not r.skipped) for r in every)
