"""Rows, the Markdown tables, and the record appended to bench/RESULTS.md."""

from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Protocol

from bench.load import LoadResult
from bench.procs import run_captured
from bench.soak import MemoryGrowth

REPO = Path(__file__).resolve().parent.parent


def _median(values: Sequence[float | None]) -> float | None:
    """The median of the known values, None if there are none."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


@dataclass
class Round:
    """One measured full-load run of a row, with the counters read around it. A row has one
    per --rounds (bench/harness.py), numbered from 1 in the order they ran."""

    number: int
    full: LoadResult
    server_cpu_s: float | None = None  # the server's process trees
    redis_cpu_s: float | None = None
    redis_calls: int | None = None  # script calls (or, for a target, all commands)
    # CPU seconds of each worker process (its tree), in start order, and of a supervisor
    # above them (its own process only; None when the server has none).
    worker_cpu_s: list[float] = field(default_factory=list)
    supervisor_cpu_s: float | None = None
    ratio: float | None = None  # decisions/s ÷ the partner's (constant server's) same round

    def per_1k(self, value: float | None) -> float | None:
        """`value` per 1000 successful decisions of this run."""
        if value is None or self.full.succeeded == 0:
            return None
        return value / (self.full.succeeded / 1000)

    @property
    def redis_rt(self) -> float | None:
        """Redis calls per decision."""
        if self.redis_calls is None or self.full.succeeded == 0:
            return None
        return self.redis_calls / self.full.succeeded

    @property
    def client_share(self) -> float | None:
        """The load generator's CPU time as a share of one core."""
        return self.full.client_cpu_s / self.full.duration_s if self.full.duration_s else None

    @property
    def worker_shares(self) -> list[float]:
        """Each worker's share of the workers' CPU time, in start order (empty: unknown)."""
        total = sum(self.worker_cpu_s)
        return [cpu / total for cpu in self.worker_cpu_s] if total > 0 else []


@dataclass
class Row:
    """One measured server under one scenario (or a row that could not be measured): its
    rounds of full load, their medians, and the half-load run."""

    transport: str
    workers: int
    scenario: str
    server: str  # ratelimitd, constant, target
    rounds: list[Round] = field(default_factory=list)
    half: LoadResult | None = None  # once, after the rounds
    ratio: float | None = None  # the median of the rounds' ratios (or set by the caller)
    problems: list[str] = field(default_factory=list)  # failed checks
    warnings: list[str] = field(default_factory=list)  # measured, but less trustworthy
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # why there is no measurement (or no complete one)
    skipped: bool = False  # not measured because this version cannot run it: no failure

    def median(self, of: Callable[[Round], float | None]) -> float | None:
        """The median over the rounds of a figure of each round."""
        return _median([of(r) for r in self.rounds])

    @property
    def rate(self) -> float | None:
        """Decisions/s: the median over the rounds (None: not measured)."""
        return self.median(lambda r: r.full.rate)

    @property
    def ratios(self) -> list[float]:
        """The rounds' ratios, in round order."""
        return [r.ratio for r in self.rounds if r.ratio is not None]

    @property
    def worker_shares(self) -> list[float]:
        """Each worker's share of the workers' CPU, largest first: per rank, the median over
        the rounds of each round's shares sorted largest first (empty: unknown)."""
        ranked = [sorted(r.worker_shares, reverse=True) for r in self.rounds if r.worker_shares]
        if not ranked:
            return []
        width = max(len(shares) for shares in ranked)
        return [
            statistics.median(shares[i] if i < len(shares) else 0.0 for shares in ranked)
            for i in range(width)
        ]

    @property
    def label(self) -> str:
        """transport/scenario/workers/server, for notes."""
        return f"{self.transport}/{self.scenario}/w{self.workers}/{self.server}"


def shares_text(shares: Sequence[float]) -> str:
    """`97% / 3%`."""
    return " / ".join(f"{share:.0%}" for share in shares)


@dataclass
class E2ERow:
    """One end-to-end wrk run through Envoy, with or without the rate limit filter."""

    rls: str  # what the filter calls: ratelimitd grpc w1, target ...
    filter: str  # off, ratelimit or quota (bench.e2e.FILTERS)
    result: LoadResult | None = None
    envoy_cpu_s: float | None = None
    rls_cpu_s: float | None = None
    redis_calls: int | None = None
    ratio: float | None = None  # with the filter / without, same Envoy
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    skipped: bool = False

    def per_1k(self, value: float | None) -> float | None:
        """`value` per 1000 successful requests."""
        if value is None or self.result is None or self.result.succeeded == 0:
            return None
        return value / (self.result.succeeded / 1000)


@dataclass
class SoakRow:
    """One soak: ratelimitd under steady load for minutes, its memory sampled."""

    transport: str
    workers: int
    scenario: str
    minutes: float
    asked_rate: float | None = None  # requests per second asked of h2load
    result: LoadResult | None = None
    # Calls of the steady load and of the probes answered with a gRPC error, or never
    # answered (bench/metrics.py); None when not counted.
    errors: int | None = None
    memory: MemoryGrowth | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    skipped: bool = False

    @property
    def label(self) -> str:
        """transport/scenario/workers/soak, for notes."""
        return f"{self.transport}/{self.scenario}/w{self.workers}/soak"


def _num(value: float | None, digits: int = 0) -> str:
    """A number for the table, `—` when unknown."""
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _checks(problems: Sequence[str], warnings: Sequence[str]) -> str:
    """The checks cell: FAILED with the failed checks, else ok with any warnings."""
    if problems:
        return "FAILED: " + "; ".join(problems)
    return "; ".join(["ok", *warnings])


class _Measurable(Protocol):
    error: str | None
    skipped: bool


def _unmeasured(cells: Sequence[str], width: int, row: _Measurable) -> list[str]:
    """A table line for a row without figures: `cells`, dashes, and why (last column)."""
    why = "not available" if row.skipped else "FAILED, not measured"
    return [*cells, *["—"] * (width - len(cells) - 1), f"{why}: {row.error}"]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table with padded columns."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join(lines)


GRPC_HEADER = (
    "transport",
    "workers",
    "scenario",
    "server",
    "decisions/s",
    "p50 ms",
    "p99 ms",
    "p99 ms @50%",
    "Redis RT/decision",
    "CPU s/1k",
    "Redis CPU s/1k",
    "h2load CPU",
    "vs constant",
    "checks",
)
# Columns added when they say something: after `vs constant`, with more than one round; before
# `checks`, when a row ran on more than one worker process.
RATIO_RANGE = "range"
WORKER_SHARES = "worker CPU share"


def grpc_table(rows: Sequence[Row], ratio: str = "vs constant") -> str:
    """The gRPC table: one line per transport/scenario/workers/server, each figure the median
    over the row's rounds; `ratio` heads the column of Row.ratio. With several rounds, the
    range of the rounds' ratios follows it; when some row has several worker processes, each
    worker's share of their CPU (largest first) precedes the checks."""
    ranges = any(len(row.rounds) > 1 for row in rows)
    shares = any(len(row.worker_shares) > 1 for row in rows)
    header = [ratio if h == "vs constant" else h for h in GRPC_HEADER]
    if ranges:
        header.insert(header.index(ratio) + 1, RATIO_RANGE)
    if shares:
        header.insert(header.index("checks"), WORKER_SHARES)
    lines = []
    for row in rows:
        if not row.rounds:
            cells = [row.transport, str(row.workers), row.scenario, row.server]
            lines.append(_unmeasured(cells, len(header), row))
            continue
        client = row.median(lambda r: r.client_share)
        ratios = row.ratios
        cells = [
            row.transport,
            str(row.workers),
            row.scenario,
            row.server,
            _num(row.rate),
            _num(row.median(lambda r: r.full.p50_ms), 2),
            _num(row.median(lambda r: r.full.p99_ms), 2),
            _num(row.half.p99_ms, 2) if row.half else "—",
            _num(row.median(lambda r: r.redis_rt), 3),
            _num(row.median(lambda r: r.per_1k(r.server_cpu_s)), 3),
            _num(row.median(lambda r: r.per_1k(r.redis_cpu_s)), 3),
            f"{100 * client:.0f}%" if client is not None else "—",
            f"{row.ratio:.2f}" if row.ratio is not None else "—",
        ]
        if ranges:
            cells.append(f"{min(ratios):.2f}-{max(ratios):.2f}" if len(ratios) > 1 else "—")
        if shares:
            cells.append(shares_text(row.worker_shares) or "—")
        problems = [*row.problems, *([row.error] if row.error else [])]
        lines.append([*cells, _checks(problems, row.warnings)])
    return _table(header, lines)


E2E_HEADER = (
    "rate limit service",
    "filter",
    "requests/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "Envoy CPU s/1k",
    "RLS CPU s/1k",
    "Redis RT/request",
    "with / without",
    "checks",
)


def e2e_table(rows: Sequence[E2ERow]) -> str:
    """The end-to-end table: with and without the filter, per rate limit service."""
    lines = []
    for row in rows:
        result = row.result
        if result is None:
            cells = [row.rls, row.filter]
            lines.append(_unmeasured(cells, len(E2E_HEADER), row))
            continue
        redis_rt = (
            row.redis_calls / result.succeeded
            if row.redis_calls is not None and result.succeeded
            else None
        )
        lines.append(
            [
                row.rls,
                row.filter,
                _num(result.rate),
                _num(result.p50_ms, 2),
                _num(result.p99_ms, 2),
                str(result.failed),
                _num(row.per_1k(row.envoy_cpu_s), 3),
                _num(row.per_1k(row.rls_cpu_s), 3) if row.filter != "off" else "—",
                _num(redis_rt, 3) if row.filter != "off" else "—",
                f"{row.ratio:.2f}" if row.ratio is not None else "—",
                _checks(row.problems, row.warnings),
            ]
        )
    return _table(E2E_HEADER, lines)


SOAK_HEADER = (
    "transport",
    "workers",
    "scenario",
    "minutes",
    "decisions/s (asked)",
    "requests answered",
    "errors",
    "p99 ms",
    "RSS start MiB",
    "RSS end MiB",
    "RSS max MiB",
    "growth MiB",
    "growth %",
    "2nd half MiB",
    "checks",
)


def soak_table(rows: Sequence[SoakRow]) -> str:
    """The soak table: one line per transport/scenario/workers."""
    lines = []
    for row in rows:
        cells = [row.transport, str(row.workers), row.scenario, f"{row.minutes:g}"]
        result, memory = row.result, row.memory
        if result is None or memory is None:
            lines.append(_unmeasured(cells, len(SOAK_HEADER), row))
            continue
        lines.append(
            [
                *cells,
                f"{result.rate:,.0f} ({_num(row.asked_rate)})",
                f"{result.succeeded:,}",
                _num(row.errors),
                _num(result.p99_ms, 2),
                _num(memory.start, 1),
                _num(memory.end, 1),
                _num(memory.peak, 1),
                f"{memory.growth:+.1f}",
                f"{memory.growth_pct:+.1f}%",
                f"{memory.second_half:+.1f}",
                _checks(row.problems, row.warnings),
            ]
        )
    return _table(SOAK_HEADER, lines)


@dataclass
class ConfigRow:
    """A generated plans-and-tenants config: how long it takes to load, the memory it takes,
    and how fast the matcher finds a tenant in it (bench/tenants.py)."""

    tenants: int
    size_kib: float | None = None  # of its files
    load_s: list[float] = field(default_factory=list)  # load_config, each in a fresh process
    rules: int | None = None
    rss_mib: float | None = None  # resident memory the loaded config added
    gc_ms: float | None = None  # a full garbage collection with the config loaded
    stall_ms: float | None = None  # an event loop's longest wait while it loads in a thread
    match_ns: dict[str, float] = field(default_factory=dict)  # match() per call, by name set
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    skipped: bool = False

    @property
    def best_s(self) -> float | None:
        """The fastest load."""
        return min(self.load_s) if self.load_s else None

    @property
    def median_s(self) -> float | None:
        """The median load."""
        return statistics.median(self.load_s) if self.load_s else None

    @property
    def label(self) -> str:
        """For notes."""
        return f"config of {self.tenants:,} tenants"


# The name sets ConfigRow.match_ns is measured with (bench/tenants.py: match_ns).
MATCH_SETS = {"spread": "every name sent", "listed": "listed names"}
CONFIG_HEADER = (
    "tenants",
    "files KiB",
    "rules",
    "load best s",
    "load median s",
    "RSS MiB",
    "full GC ms",
    "loop stall ms",
    *(f"match() ns/call, {what}" for what in MATCH_SETS.values()),
    "checks",
)


def config_table(rows: Sequence[ConfigRow]) -> str:
    """One line per config, and the ratio of the last to the first."""
    lines = []

    def figures(row: ConfigRow) -> list[float | None]:
        return [
            row.size_kib,
            row.rules,
            row.best_s,
            row.median_s,
            row.rss_mib,
            row.gc_ms,
            row.stall_ms,
            *(row.match_ns.get(name) for name in MATCH_SETS),
        ]

    digits = (0, 0, 3, 3, 1, 1, 0, *(0 for _ in MATCH_SETS))
    for row in rows:
        if not row.load_s:
            lines.append(_unmeasured([f"{row.tenants:,}"], len(CONFIG_HEADER), row))
            continue
        cells = [_num(v, d) for v, d in zip(figures(row), digits, strict=True)]
        lines.append([f"{row.tenants:,}", *cells, _checks(row.problems, row.warnings)])
    measured = [row for row in rows if row.load_s]
    if len(measured) >= 2:
        small, large = measured[0], measured[-1]
        ratios = [
            f"{b / a:,.2f}" if a and b is not None else "—"
            for a, b in zip(figures(small), figures(large), strict=True)
        ]
        lines.append([f"{large.tenants:,} ÷ {small.tenants:,}", *ratios, ""])
    return _table(CONFIG_HEADER, lines)


@dataclass
class ReloadRow:
    """Requests during one config reload under load, or outside every reload."""

    window: str  # what happened: `1: tenants file rewritten`, `SIGHUP`, `outside reloads`
    reload_s: float | None = None  # trigger to the last worker's `config_reloaded`
    requests: int = 0  # successful requests started in the window
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    ratio: float | None = None  # p99 ÷ p99 outside reloads
    fail_open: int | None = None  # failure_allowed decisions (ratelimitd's counters)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    skipped: bool = False


RELOAD_HEADER = (
    "window",
    "trigger → config_reloaded s",
    "requests",
    "p50 ms",
    "p99 ms",
    "max ms",
    "p99 vs outside",
    "fail-open decisions",
    "checks",
)


def reload_table(rows: Sequence[ReloadRow]) -> str:
    """One line per reload, then the requests outside every reload."""
    lines = []
    for row in rows:
        if row.error is not None:
            lines.append(_unmeasured([row.window], len(RELOAD_HEADER), row))
            continue
        lines.append(
            [
                row.window,
                _num(row.reload_s, 2),
                f"{row.requests:,}",
                _num(row.p50_ms, 2),
                _num(row.p99_ms, 2),
                _num(row.max_ms, 2),
                _num(row.ratio, 2),
                _num(row.fail_open),
                _checks(row.problems, row.warnings),
            ]
        )
    return _table(RELOAD_HEADER, lines)


@dataclass
class NoisyRow:
    """One tenant's requests in one noisy-neighbour run (bench/tenants.py)."""

    store: str  # redis, redis cluster
    run: str  # alone, with the noisy tenant
    tenant: str
    asked_rate: float
    result: LoadResult | None = None
    admitted: int | None = None  # decisions within the limit (ratelimitd's counters)
    rejected: int | None = None  # OVER_LIMIT decisions, from Redis or the local cache
    cache_hits: int | None = None  # of those, answered by the local over-limit cache
    expected: str = ""  # what should have been admitted
    redis_rt: float | None = None  # Redis script calls ÷ decisions of the whole run
    ratio: float | None = None  # p99 ÷ the quiet tenant's p99 alone
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    skipped: bool = False

    @property
    def label(self) -> str:
        """For notes."""
        return f"{self.store}/{self.run}/{self.tenant}"


NOISY_HEADER = (
    "store",
    "run",
    "tenant",
    "asked/s",
    "sent",
    "admitted",
    "expected admitted",
    "OVER_LIMIT (local cache)",
    "p50 ms",
    "p99 ms",
    "p99 vs alone",
    "Redis RT/decision",
    "checks",
)


def noisy_table(rows: Sequence[NoisyRow]) -> str:
    """One line per tenant per run."""
    lines = []
    for row in rows:
        cells = [row.store, row.run, row.tenant, _num(row.asked_rate)]
        result = row.result
        if result is None:
            lines.append(_unmeasured(cells, len(NOISY_HEADER), row))
            continue
        rejected = _num(row.rejected)
        if row.rejected:
            rejected += f" ({_num(row.cache_hits)})"
        lines.append(
            [
                *cells,
                _num(result.done),
                _num(row.admitted),
                row.expected,
                rejected,
                _num(result.p50_ms, 2),
                _num(result.p99_ms, 2),
                _num(row.ratio, 2),
                _num(row.redis_rt, 3),
                _checks(row.problems, row.warnings),
            ]
        )
    return _table(NOISY_HEADER, lines)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else "not found"


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> str:
    """nproc, CPU model, memory, kernel."""
    model = "unknown CPU"
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        if found:
            model = found.group(1).strip()
    except OSError:
        pass
    memory = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"nproc {len(os.sched_getaffinity(0))}, {model}{memory}, Linux {platform.release()}"


# As a server process imports it: without the current directory `-c` puts first on the path.
_WHERE_IS_RATELIMITD = (
    "import os, sys; sys.path[:] = [p for p in sys.path if p]; "
    "import ratelimitd; print(os.path.dirname(ratelimitd.__file__))"
)


def versions(envoy: Path) -> str:
    """Versions of everything measured or measuring."""
    # The ratelimitd the servers import (PYTHONPATH may point at another checkout, to measure
    # an earlier commit), and its commit; say when its working tree differs from the commit.
    source = Path(
        run_captured(
            [
                sys.executable,
                "-c",
                "import ratelimitd, os; print(os.path.dirname(ratelimitd.__file__))",
            ]
        ).strip()
        or REPO / "ratelimitd"
    )
    commit = run_captured(["git", "-C", str(source), "rev-parse", "--short", "HEAD"]).strip()
    dirty = run_captured(["git", "-C", str(source), "status", "--porcelain", "--", "."])
    h2load = _first_line(run_captured(["h2load", "--version"]))
    wrk = _first_line(run_captured(["wrk", "--version"])).split(" [")[0]
    redis_version = re.search(r"v=(\S+)", run_captured(["redis-server", "--version"]))
    envoy_version = re.search(r"version: \S+?/([\d.]+)/", run_captured([str(envoy), "--version"]))
    parts = [
        f"ratelimitd {_version('ratelimitd')}"
        + (
            f" (commit {commit}{', ratelimitd/ with uncommitted changes' if dirty.strip() else ''})"
            if re.fullmatch(r"[0-9a-f]+", commit)
            else ""
        ),
        f"Python {platform.python_version()}",
        f"grpcio {_version('grpcio')}",
        f"protobuf {_version('protobuf')}",
        f"redis-py {_version('redis')}",
        f"pyvoy {_version('pyvoy')}",
        h2load,
        wrk,
        f"redis-server {redis_version.group(1) if redis_version else 'not found'}",
        f"envoy {envoy_version.group(1) if envoy_version else 'not found'}",
    ]
    return ", ".join(parts)


def command_line() -> str:
    """The exact command that was run, paths relative to the working directory."""

    def short(path: str) -> str:
        try:
            return os.path.relpath(path)
        except ValueError:
            return path

    return shlex.join([short(sys.executable), short(sys.argv[0]), *sys.argv[1:]])


def record(
    *,
    settings: str,
    tables: Sequence[tuple[str, str]],
    notes: Sequence[str],
    envoy: Path,
) -> str:
    """The Markdown section for one run: header, tables (each with its title, if any),
    notes."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"## {now}",
        "",
        f"- command: `{command_line()}`",
        f"- machine: {machine()}",
        f"- versions: {versions(envoy)}",
        f"- load: {settings}",
        "",
    ]
    for title, table in tables:
        parts += [title, "", table, ""] if title else [table, ""]
    if notes:
        parts += ["Notes:", "", *(f"- {n}" for n in notes), ""]
    return "\n".join(parts)


def append(path: Path, section: str) -> None:
    """Append `section` to the results file, creating it with a title if needed."""
    if not path.exists():
        path.write_text(
            "# Benchmark results\n\n"
            "Appended by `bench/run.py`, newest last. Column meanings: bench/README.md.\n\n"
        )
    with path.open("a") as out:
        out.write(section + "\n")
