"""Processes the harness starts: free ports, start and stop (whole process trees), readiness,
and CPU time read from /proc.

Every process is started in a session of its own, so a signal to its process group reaches
the Envoy that pyvoy starts, the workers a server forks, and nothing else; the terminal's
Ctrl-C reaches only the harness, which then stops them all in order.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STOP_TIMEOUT_S = 10.0


class HarnessError(RuntimeError):
    """Something the harness needs did not work; the message says what."""


class UnavailableError(HarnessError):
    """What was asked for cannot run with this version or machine (not a failure)."""


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback TCP port nothing listens on now, never the same one twice in a run."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise HarnessError("no free port found")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces and parentheses itself.
    return raw[raw.rindex(")") + 2 :].split()


def _children_map() -> dict[int, list[int]]:
    """Every living process's children, by parent pid."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def children(pid: int) -> list[int]:
    """The living children of `pid`, lowest pid (usually the first started) first."""
    return sorted(_children_map().get(pid, []))


def descendants(pid: int) -> list[int]:
    """Every living descendant of `pid` (children, their children, ...)."""
    children = _children_map()
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def own_cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` alone (0 if it is gone), in seconds."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # Fields 14 and 15 of stat(5), counted from 1 with pid and comm as 1 and 2.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and all its living descendants, in seconds."""
    return sum(own_cpu_seconds(each) for each in [pid, *descendants(pid)])


def resident_kib(pid: int) -> dict[int, tuple[str, int]]:
    """Name and resident set size (VmRSS, KiB) of `pid` and each of its living descendants,
    by pid. Processes without a VmRSS line (zombies) are left out."""
    found: dict[int, tuple[str, int]] = {}
    for each in [pid, *descendants(pid)]:
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except OSError:
            continue  # exited since descendants() listed it
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if "VmRSS" in fields:
            found[each] = (fields["Name"].strip(), int(fields["VmRSS"].split()[0]))
    return found


@dataclass(frozen=True)
class MachineCpu:
    """The whole machine's CPU seconds since boot, summed over CPUs (/proc/stat)."""

    tasks: float  # user + nice + system: time charged to processes (ours and others')
    steal: float  # time the hypervisor gave our virtual CPUs to someone else

    @classmethod
    def now(cls) -> MachineCpu:
        """Read the first line of /proc/stat."""
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system = (int(v) for v in fields[:3])
        steal = int(fields[7]) if len(fields) > 7 else 0
        return cls((user + nice + system) / CLOCK_TICKS, steal / CLOCK_TICKS)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


@dataclass
class Proc:
    """A process the harness started, with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of its log, for error messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


@dataclass
class Supervisor:
    """Starts processes and guarantees they are all stopped, process trees included."""

    workdir: Path
    running: list[Proc] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Proc:
        """Start `argv` in a new session, stdout and stderr into `<workdir>/<name>.log`
        (`<name>-2.log`, ... if that exists: every process gets a log of its own)."""
        log = self.workdir / f"{name}.log"
        copy = 1
        while log.exists():
            copy += 1
            log = self.workdir / f"{name}-{copy}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=None if env is None else {**os.environ, **env},
                cwd=cwd,
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.running.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM the process group, SIGKILL whatever is left after `timeout` seconds."""
        if proc in self.running:
            self.running.remove(proc)
        tree = descendants(proc.pid) if proc.alive() else []
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.popen.wait(timeout=timeout)
        # Descendants that left the group, or outlived their parent.
        deadline = time.monotonic() + timeout
        for pid in tree:
            while _stat_fields(pid) is not None and time.monotonic() < deadline:
                time.sleep(0.05)
            if _stat_fields(pid) is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        """Stop every process still running, the last started first."""
        for proc in reversed(list(self.running)):
            self.stop(proc)


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: unwind like Ctrl-C, so every process gets stopped."""


def install_signal_handlers() -> None:
    """Turn SIGTERM and SIGHUP into an exception, and make sure SIGINT raises
    KeyboardInterrupt."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(f"signal {signal.Signals(signum).name}")

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)
    # Also when started with SIGINT ignored (a background job of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)


def wait_until(
    condition: Callable[[], bool], *, timeout: float, what: str, proc: Proc | None = None
) -> None:
    """Poll `condition` until it holds; HarnessError after `timeout` or if `proc` exits."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and not proc.alive():
            raise HarnessError(
                f"{proc.name} exited ({proc.popen.returncode}) while waiting for {what}; "
                f"log {proc.log}:\n{proc.log_tail()}"
            )
        if time.monotonic() > deadline:
            tail = f"; log {proc.log}:\n{proc.log_tail()}" if proc else ""
            raise HarnessError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")
        time.sleep(0.05)


def http_ok(url: str) -> bool:
    """True when GET `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def run_captured(argv: Sequence[str], timeout: float = 20) -> str:
    """stdout and stderr of a short command, or '' if it cannot run."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout + done.stderr
