"""Load generators: h2load for gRPC (with the body shim for multi-message scenarios) and wrk
for end-to-end HTTP/1.1; their output parsed into results."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.procs import HarnessError, Proc, Supervisor
from bench.scenarios import RLS_METHOD, frame

SHIM_SOURCE = Path(__file__).resolve().parent / "preload" / "cycle_bodies.c"
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")


def build_shim(workdir: Path) -> tuple[Path | None, str]:
    """Compile the body shim into `workdir`: (path, "") or (None, why not)."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None, "no C compiler (cc/gcc/clang) on PATH; Debian: apt-get install gcc"
    out = workdir / "cycle_bodies.so"
    argv = [compiler, "-O2", "-shared", "-fPIC", "-o", str(out), str(SHIM_SOURCE), "-ldl"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return None, f"compiling {SHIM_SOURCE.name} failed: {done.stderr.strip()}"
    return out, ""


@dataclass
class Bodies:
    """A scenario's framed request bodies as files h2load and the shim read."""

    data: Path  # the first body: h2load -d (its size is every body's size)
    table: Path  # all bodies, back to back: the shim's table
    count: int
    length: int
    next_start: int = 0  # where the next run starts in the table (runs continue the cycle)

    @classmethod
    def write(cls, directory: Path, name: str, messages: Sequence[bytes]) -> Bodies:
        """Frame `messages` and write them under `directory`."""
        framed = [frame(m) for m in messages]
        if len({len(b) for b in framed}) != 1:
            raise HarnessError(f"{name}: bodies differ in length; the shim needs equal lengths")
        data = directory / f"{name}.body"
        data.write_bytes(framed[0])
        table = directory / f"{name}.bodies"
        table.write_bytes(b"".join(framed))
        return cls(data, table, len(framed), len(framed[0]))


@dataclass
class LoadResult:
    """One load run, as the load generator saw it."""

    duration_s: float
    rate: float  # successful requests per second, as the load generator reports it
    succeeded: int  # 2xx responses that completed
    failed: int  # failed, errored or timed-out requests, and non-2xx responses
    p50_ms: float | None
    p99_ms: float | None
    client_cpu_s: float  # CPU time of the load generator
    shim_served: int | None = None  # bodies the shim substituted (None: shim not used)
    # Requests h2load finished (succeeded or failed) and started: those started but not done
    # were cut off in flight when the duration ended (at most -c times -m; the server may or may
    # not answer them). None for wrk.
    done: int | None = None
    started: int | None = None
    log: Path | None = None  # h2load's per-request log (see `requests`)


def percentile(sorted_values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None if there are none)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(share * len(sorted_values)))
    return sorted_values[rank - 1]


def _finished(text: str) -> tuple[float, float]:
    """Duration (s) and rate of h2load's `finished in 10.00s, 4321.20 req/s`."""
    match = re.search(r"finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s", text)
    if match is None:
        raise HarnessError(f"h2load printed no 'finished in':\n{text[-2000:]}")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0}[match.group(2)]
    return float(match.group(1)) * scale, float(match.group(3))


def _wait_with_rusage(
    proc_name: str, popen: subprocess.Popen[bytes], timeout: float
) -> tuple[int, float]:
    """Wait for a child; its exit status and user+system CPU seconds (from wait4)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(popen.pid, os.WNOHANG)
        if pid == popen.pid:
            popen.returncode = os.waitstatus_to_exitcode(status)
            return popen.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            raise HarnessError(f"{proc_name} did not finish within {timeout:.0f}s")
        time.sleep(0.05)


def requests(log_file: Path) -> list[tuple[float, float]]:
    """The successful (2xx) requests of h2load's `--log-file`, in its order: start time (Unix
    seconds) and latency (ms, request start to end of response)."""
    found: list[tuple[float, float]] = []
    if log_file.exists():
        with log_file.open() as rows:
            for row in rows:
                parts = row.split("\t")
                if len(parts) >= 3 and parts[1].startswith("2"):
                    found.append((int(parts[0]) / 1e6, int(parts[2]) / 1000))
    return found


@dataclass
class RunningLoad:
    """An h2load run started and not yet waited for (H2Load.start)."""

    supervisor: Supervisor
    proc: Proc
    timeout_s: float
    log_file: Path
    bodies: Bodies
    shim_report: Path | None  # where the shim writes how many bodies it served, if used

    def finish(self) -> LoadResult:
        """Wait until h2load ends; its result."""
        output, cpu = _finish_tool(self.supervisor, self.proc, "h2load", self.timeout_s)
        result = _parse_h2load(output, self.log_file, cpu)
        if self.shim_report is not None:
            try:
                result.shim_served = int(self.shim_report.read_text().strip())
            except (OSError, ValueError):
                result.shim_served = 0
            bodies = self.bodies
            bodies.next_start = (bodies.next_start + result.shim_served) % bodies.count
        return result


@dataclass(frozen=True)
class H2Load:
    """h2load settings shared by every gRPC run."""

    clients: int = 16
    streams: int = 8
    threads: int = 1

    def run(
        self,
        supervisor: Supervisor,
        *,
        host: str,
        port: int,
        bodies: Bodies,
        duration_s: float,
        shim: Path | None,
        rps_per_client: float | None = None,
        name: str = "h2load",
        method: str = RLS_METHOD,
    ) -> LoadResult:
        """One timed run against host:port; latencies from h2load's per-request log."""
        return self.start(
            supervisor,
            host=host,
            port=port,
            bodies=bodies,
            duration_s=duration_s,
            shim=shim,
            rps_per_client=rps_per_client,
            name=name,
            method=method,
        ).finish()

    def start(
        self,
        supervisor: Supervisor,
        *,
        host: str,
        port: int,
        bodies: Bodies,
        duration_s: float,
        shim: Path | None,
        rps_per_client: float | None = None,
        name: str = "h2load",
        method: str = RLS_METHOD,
    ) -> RunningLoad:
        """Start a timed run against host:port (`run` waits for it; this does not)."""
        if bodies.count > 1 and shim is None:
            raise HarnessError("this scenario needs the body shim, which could not be built")
        workdir = supervisor.workdir
        log_file = workdir / f"{name}.tsv"
        log_file.unlink(missing_ok=True)
        argv = [
            "h2load",
            f"--clients={self.clients}",
            f"--max-concurrent-streams={self.streams}",
            f"--threads={self.threads}",
            f"--duration={max(1, round(duration_s * 1000))}ms",
            f"--data={bodies.data}",
            f"--log-file={log_file}",
        ]
        argv += [f"--header={h}" for h in GRPC_HEADERS]
        if rps_per_client is not None:
            argv.append(f"--rps={rps_per_client:.3f}")
        argv.append(f"http://{host}:{port}{method}")
        env: dict[str, str] = {}
        report = None
        if bodies.count > 1 and shim is not None:
            report = workdir / f"{name}.shim"
            report.unlink(missing_ok=True)
            env = {
                "LD_PRELOAD": str(shim),
                "BENCH_DATA": str(bodies.data),
                "BENCH_BODIES": str(bodies.table),
                "BENCH_BODY_LEN": str(bodies.length),
                "BENCH_BODY_COUNT": str(bodies.count),
                "BENCH_BODY_START": str(bodies.next_start),
                "BENCH_SHIM_REPORT": str(report),
            }
        proc = supervisor.start(name, argv, env=env)
        return RunningLoad(supervisor, proc, duration_s + 60, log_file, bodies, report)


def _parse_h2load(output: str, log_file: Path, cpu: float) -> LoadResult:
    """Counts from h2load's summary, latencies from its log."""
    counts = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout",
        output,
    )
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    if counts is None or codes is None:
        raise HarnessError(f"cannot parse h2load's summary:\n{output[-2000:]}")
    succeeded = int(codes.group(1))
    failed = int(counts.group(5)) + int(counts.group(6)) + int(counts.group(7))
    failed += int(codes.group(2)) + int(codes.group(3)) + int(codes.group(4))
    latencies = sorted(ms for _, ms in requests(log_file))
    duration, rate = _finished(output)
    return LoadResult(
        duration_s=duration,
        rate=rate,
        succeeded=succeeded,
        failed=failed,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        client_cpu_s=cpu,
        done=int(counts.group(3)),
        started=int(counts.group(2)),
        log=log_file,
    )


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _finish_tool(
    supervisor: Supervisor, proc: Proc, tool: str, timeout: float
) -> tuple[str, float]:
    """Wait for a load tool `supervisor` started: its output and CPU seconds; HarnessError if
    it fails."""
    try:
        code, cpu = _wait_with_rusage(proc.name, proc.popen, timeout)
    finally:
        supervisor.stop(proc)
    output = proc.log.read_text(errors="replace")
    if code != 0:
        raise HarnessError(f"{tool} exited {code}:\n{output[-2000:]}")
    return output, cpu


def _wrk_ms(value: str) -> float:
    """wrk's `1.23ms` / `850.00us` / `1.02s` in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if match is None:
        raise HarnessError(f"cannot read wrk latency {value!r}")
    return float(match.group(1)) * _WRK_UNITS[match.group(2)]


@dataclass(frozen=True)
class Wrk:
    """wrk settings for the end-to-end runs."""

    connections: int = 16
    threads: int = 1

    def run(
        self,
        supervisor: Supervisor,
        *,
        url: str,
        headers: Sequence[str],
        duration_s: float,
        name: str = "wrk",
    ) -> LoadResult:
        """One timed HTTP/1.1 run; latencies from wrk's --latency distribution."""
        argv = [
            "wrk",
            f"--connections={self.connections}",
            f"--threads={self.threads}",
            f"--duration={max(1, round(duration_s))}s",
            "--latency",
            *(f"--header={h}" for h in headers),
            url,
        ]
        proc = supervisor.start(name, argv)
        output, cpu = _finish_tool(supervisor, proc, "wrk", duration_s + 60)
        total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", output)
        if total is None:
            raise HarnessError(f"cannot parse wrk's summary:\n{output[-2000:]}")
        requests = int(total.group(1))
        duration_s = _wrk_ms(total.group(2) + total.group(3)) / 1000
        non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
        socket_errors = re.search(
            r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
        )
        failed = int(non_2xx.group(1)) if non_2xx else 0
        if socket_errors:
            failed += sum(int(g) for g in socket_errors.groups())
        distribution = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", output, re.MULTILINE))
        rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
        return LoadResult(
            duration_s=duration_s,
            rate=float(rate.group(1)) if rate else requests / duration_s,
            succeeded=max(0, requests - (int(non_2xx.group(1)) if non_2xx else 0)),
            failed=failed,
            p50_ms=_wrk_ms(distribution["50"]) if "50" in distribution else None,
            p99_ms=_wrk_ms(distribution["99"]) if "99" in distribution else None,
            client_cpu_s=cpu,
        )
