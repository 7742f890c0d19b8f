"""Files through which the supervisor (workers.py) and its worker processes signal each other.
Envoy keeps signals for itself and runs the asgi app's loop off the main thread, where Python
cannot take them; a file reaches every worker of either transport the same way.

- The reload marker: one for all workers; the supervisor writes the next reload generation
  into it on each SIGHUP. A worker reads it before it loads its config and reloads whenever it
  changes afterwards, so a SIGHUP is never lost, however early it comes.
- A ready marker per worker: created by the worker once it serves.
- The drain marker (asgi): its appearance turns every worker not-ready at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

import structlog

from ratelimitd.app.settings import DRAIN_MARKER_ENV, READY_MARKER_ENV, RELOAD_MARKER_ENV
from ratelimitd.config.watch import ConfigReloader
from ratelimitd.transports.health import Readiness

log = structlog.get_logger(__name__)

# How often a worker looks at the markers: a stat each, cheap.
POLL_INTERVAL_S = 0.1


def read_marker(path: Path) -> bytes | None:
    """The marker's contents, None while it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def write_marker(path: Path, contents: str) -> None:
    """Replace the marker's contents in one step: a reader sees the old or the new, whole."""
    staged = path.with_name(f".{path.name}.new")
    staged.write_text(contents)
    staged.replace(path)


async def _reload_when_rewritten(
    marker: Path, reloader: ConfigReloader, contents: bytes | None
) -> None:
    """Reload the config each time `marker`'s contents change from `contents`."""
    while True:
        await asyncio.sleep(POLL_INTERVAL_S)
        previous, contents = contents, read_marker(marker)
        if contents != previous:
            reloader.request()


async def _stop_serving_when_created(marker: Path, readiness: Readiness) -> None:
    """Turn not-ready (health NOT_SERVING, /healthcheck 503) once `marker` exists."""
    while not marker.exists():  # noqa: ASYNC110, ASYNC240
        await asyncio.sleep(POLL_INTERVAL_S)
    readiness.serving = False
    log.info("draining", pid=os.getpid())


class WorkerLink:
    """A worker's end of its supervisor's markers. Create it before loading the config."""

    def __init__(self, reload_marker: Path, ready_marker: Path, drain_marker: Path | None) -> None:
        self._reload_marker = reload_marker
        self._ready_marker = ready_marker
        self._drain_marker = drain_marker
        # The generation the config about to be loaded already includes.
        self._generation = read_marker(reload_marker)
        self._tasks: list[asyncio.Future[None]] = []

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> WorkerLink | None:
        """The link the supervisor's variables describe; None for a process started alone."""
        reload_marker = environ.get(RELOAD_MARKER_ENV)
        ready_marker = environ.get(READY_MARKER_ENV)
        if not reload_marker or not ready_marker:
            return None
        drain_marker = environ.get(DRAIN_MARKER_ENV)
        drain = Path(drain_marker) if drain_marker else None
        return cls(Path(reload_marker), Path(ready_marker), drain)

    def serve(self, reloader: ConfigReloader, readiness: Readiness) -> None:
        """Follow the supervisor's reloads (and drain) on the running loop, and tell it this
        worker is ready: call once the worker serves."""
        self._tasks.append(
            asyncio.ensure_future(
                _reload_when_rewritten(self._reload_marker, reloader, self._generation)
            )
        )
        if self._drain_marker is not None:
            self._tasks.append(
                asyncio.ensure_future(_stop_serving_when_created(self._drain_marker, readiness))
            )
        self._ready_marker.touch()

    async def stop(self) -> None:
        """Stop following the markers."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
