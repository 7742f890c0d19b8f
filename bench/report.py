"""Rows, the Markdown tables, and the record appended to bench/RESULTS.md."""

from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from bench.load import LoadResult
from bench.procs import run_captured
from bench.soak import MemoryGrowth

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Row:
    """One measured server under one scenario (or a row that could not be measured)."""

    transport: str
    workers: int
    scenario: str
    server: str  # ratelimitd, constant, target
    full: LoadResult | None = None
    half: LoadResult | None = None
    server_cpu_s: float | None = None  # during the full-load run
    redis_cpu_s: float | None = None
    redis_calls: int | None = None  # script calls (or, for a target, all commands)
    ratio: float | None = None
    problems: list[str] = field(default_factory=list)  # failed checks
    warnings: list[str] = field(default_factory=list)  # measured, but less trustworthy
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # why there is no measurement
    skipped: bool = False  # not measured because this version cannot run it: no failure

    def per_1k(self, value: float | None) -> float | None:
        """`value` per 1000 successful decisions of the full-load run."""
        if value is None or self.full is None or self.full.succeeded == 0:
            return None
        return value / (self.full.succeeded / 1000)

    @property
    def label(self) -> str:
        """transport/scenario/workers/server, for notes."""
        return f"{self.transport}/{self.scenario}/w{self.workers}/{self.server}"


@dataclass
class E2ERow:
    """One end-to-end wrk run through Envoy, with or without the rate limit filter."""

    rls: str  # what the filter calls: ratelimitd grpc w1, target ...
    with_filter: bool
    result: LoadResult | None = None
    envoy_cpu_s: float | None = None
    rls_cpu_s: float | None = None
    redis_calls: int | None = None
    ratio: float | None = None  # with filter / without, same Envoy
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
    # Failed requests + non-OK gRPC statuses under load + gRPC errors of the probes during the
    # soak; None when the statuses under load could not be counted.
    errors: int | None = None
    errors_exact: bool = True  # False: `errors` is an upper bound
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


def grpc_table(rows: Sequence[Row]) -> str:
    """The gRPC table: one line per transport/scenario/workers/server."""
    lines = []
    for row in rows:
        if row.full is None:
            cells = [row.transport, str(row.workers), row.scenario, row.server]
            why = "not available" if row.skipped else "FAILED, not measured"
            cells += ["—"] * (len(GRPC_HEADER) - 5) + [f"{why}: {row.error}"]
            lines.append(cells)
            continue
        redis_rt = (
            row.redis_calls / row.full.succeeded
            if row.redis_calls is not None and row.full.succeeded
            else None
        )
        client = 100 * row.full.client_cpu_s / row.full.duration_s if row.full.duration_s else None
        lines.append(
            [
                row.transport,
                str(row.workers),
                row.scenario,
                row.server,
                _num(row.full.rate),
                _num(row.full.p50_ms, 2),
                _num(row.full.p99_ms, 2),
                _num(row.half.p99_ms, 2) if row.half else "—",
                _num(redis_rt, 3),
                _num(row.per_1k(row.server_cpu_s), 3),
                _num(row.per_1k(row.redis_cpu_s), 3),
                f"{client:.0f}%" if client is not None else "—",
                f"{row.ratio:.2f}" if row.ratio is not None else "—",
                _checks(row.problems, row.warnings),
            ]
        )
    return _table(GRPC_HEADER, lines)


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
            cells = [row.rls, "on" if row.with_filter else "off"]
            why = "not available" if row.skipped else "FAILED, not measured"
            cells += ["—"] * (len(E2E_HEADER) - 3) + [f"{why}: {row.error}"]
            lines.append(cells)
            continue
        redis_rt = (
            row.redis_calls / result.succeeded
            if row.redis_calls is not None and result.succeeded
            else None
        )
        lines.append(
            [
                row.rls,
                "on" if row.with_filter else "off",
                _num(result.rate),
                _num(result.p50_ms, 2),
                _num(result.p99_ms, 2),
                str(result.failed),
                _num(row.per_1k(row.envoy_cpu_s), 3),
                _num(row.per_1k(row.rls_cpu_s), 3) if row.with_filter else "—",
                _num(redis_rt, 3) if row.with_filter else "—",
                f"{row.ratio:.2f}" if row.ratio is not None else "—",
                _checks(row.problems, row.warnings),
            ]
        )
    return _table(E2E_HEADER, lines)


def errors_cell(row: SoakRow) -> str:
    """The soak's errors: `12`, `≤ 12` for an upper bound, `—` when not counted."""
    if row.errors is None:
        return "—"
    return f"{'' if row.errors_exact else '≤ '}{row.errors:,}"


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
            why = "not available" if row.skipped else "FAILED, not measured"
            cells += ["—"] * (len(SOAK_HEADER) - 5) + [f"{why}: {row.error}"]
            lines.append(cells)
            continue
        lines.append(
            [
                *cells,
                f"{result.rate:,.0f} ({_num(row.asked_rate)})",
                f"{result.succeeded:,}",
                errors_cell(row),
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


def versions(envoy: Path) -> str:
    """Versions of everything measured or measuring."""
    commit = run_captured(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]).strip()
    h2load = _first_line(run_captured(["h2load", "--version"]))
    wrk = _first_line(run_captured(["wrk", "--version"])).split(" [")[0]
    redis_version = re.search(r"v=(\S+)", run_captured(["redis-server", "--version"]))
    envoy_version = re.search(r"version: \S+?/([\d.]+)/", run_captured([str(envoy), "--version"]))
    parts = [
        f"ratelimitd {_version('ratelimitd')}"
        + (f" (commit {commit})" if re.fullmatch(r"[0-9a-f]+", commit) else ""),
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
    grpc_rows: Sequence[Row],
    e2e_rows: Sequence[E2ERow],
    notes: Sequence[str],
    envoy: Path,
    soak_rows: Sequence[SoakRow] = (),
) -> str:
    """The Markdown section for one run: header, tables, notes."""
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
    if grpc_rows:
        parts += [grpc_table(grpc_rows), ""]
    if e2e_rows:
        parts += ["End to end (wrk → Envoy → upstream):", "", e2e_table(e2e_rows), ""]
    if soak_rows:
        parts += ["Soak (steady load; RSS of ratelimitd's process tree):", ""]
        parts += [soak_table(soak_rows), ""]
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
