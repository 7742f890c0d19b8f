"""Soak mode (`bench/run.py --soak MINUTES`): what is sampled while ratelimitd runs under
steady load, and the figures made from it.

A sampler thread reads the resident set size of ratelimitd's process tree and probes its
decisions every SAMPLE_INTERVAL_S seconds while the harness's main thread runs h2load, so
the load is one uninterrupted run and a Ctrl-C still reaches the main thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from bench.scenarios import RLS_METHOD
from bench.servers import ProbeResult, Server, probe

SAMPLE_INTERVAL_S = 10.0


@dataclass(frozen=True)
class RssSample:
    """ratelimitd's processes at one moment of the soak."""

    at_s: float  # seconds since the steady load started
    processes: dict[int, tuple[str, int]]  # pid: (name, VmRSS KiB)

    @property
    def mib(self) -> float:
        """Resident set size of the whole tree, MiB."""
        return sum(kib for _, kib in self.processes.values()) / 1024


@dataclass(frozen=True)
class MemoryGrowth:
    """The RSS figures of a soak, MiB."""

    start: float  # after the warm-up, before the steady load
    end: float  # when the steady load ended
    peak: float
    second_half: float  # end less the sample nearest half-time: growth once warmed up

    @property
    def growth(self) -> float:
        """End less start, MiB."""
        return self.end - self.start

    @property
    def growth_pct(self) -> float:
        """End less start, % of start."""
        return 100 * self.growth / self.start if self.start else 0.0

    @classmethod
    def of(cls, samples: Sequence[RssSample]) -> MemoryGrowth:
        """The figures of `samples` (at least one, in time order)."""
        first, last = samples[0], samples[-1]
        middle = min(samples, key=lambda s: abs(s.at_s - last.at_s / 2))
        return cls(first.mib, last.mib, max(s.mib for s in samples), last.mib - middle.mib)


class Sampler:
    """Samples RSS and probes `messages` at entry, every SAMPLE_INTERVAL_S seconds on a
    thread of its own, and at exit."""

    def __init__(
        self,
        server: Server,
        messages: Sequence[bytes],
        progress: Callable[[str], None],
        method: str = RLS_METHOD,
    ) -> None:
        self.server = server
        self.messages = messages
        self.method = method
        self.progress = progress
        self.samples: list[RssSample] = []
        self.probes: list[ProbeResult] = []
        self.failure: Exception | None = None
        self._began = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._began = time.monotonic()
        self._sample()
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        if kind is None:
            self._sample()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            try:
                self._sample()
            except Exception as exc:
                # Kept for the main thread: an exception on this thread would only be printed,
                # and the soak would end with too few samples and no reason given.
                self.failure = exc
                return

    def _sample(self) -> None:
        sample = RssSample(time.monotonic() - self._began, self.server.resident_kib())
        checked = probe(self.server, self.messages, method=self.method)
        self.samples.append(sample)
        self.probes.append(checked)
        self.progress(
            f"   {sample.at_s:6.0f} s  RSS {sample.mib:8.1f} MiB  "
            f"{len(sample.processes)} processes  probe {checked.summary()}"
        )

    def tree_changes(self) -> list[str]:
        """How the set of processes changed between samples (a worker restarted, say)."""
        changes = []
        for before, after in zip(self.samples, self.samples[1:], strict=False):
            if set(before.processes) != set(after.processes):
                changes.append(
                    f"at {after.at_s:.0f} s: pids {sorted(before.processes)} -> "
                    f"{sorted(after.processes)}"
                )
        return changes


def per_process(samples: Sequence[RssSample]) -> str:
    """Each process's RSS at the first and last sample: which one grew."""
    first, last = samples[0].processes, samples[-1].processes
    parts = []
    for pid in sorted(first.keys() | last.keys()):
        name = (first.get(pid) or last[pid])[0]
        start = f"{first[pid][1] / 1024:.1f}" if pid in first else "—"
        end = f"{last[pid][1] / 1024:.1f}" if pid in last else "—"
        parts.append(f"{name}[{pid}] {start} → {end}")
    return ", ".join(parts) + " MiB"


def curve(samples: Sequence[RssSample]) -> str:
    """Every sample's RSS, MiB, in order."""
    return " ".join(f"{s.mib:.1f}" for s in samples)
