"""Live config reload: poll what `--config` names, reload when it changes or when asked
(SIGHUP), and keep the last good config when the new one is invalid.

Polling rather than inotify: no dependency, any filesystem (network ones included), and it
sees every way a config changes the same way — in-place writes, atomic renames, files added to
or removed from a directory, and the Kubernetes ConfigMap swap of `..data` (the top-level
files are symlinks through it, so what they resolve to changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from ratelimitd.config.errors import InvalidConfigError
from ratelimitd.config.loader import ContentDigest, discover, file_hash, load_config
from ratelimitd.model.observer import NO_OBSERVER, Observer
from ratelimitd.model.rules import Config, Defaults

log = structlog.get_logger(__name__)

# File timestamps are coarse (a clock tick; seconds on some filesystems): a file changed this
# recently can change again without its stat changing, so it is hashed again on every poll.
_RECENT_NS = 2_000_000_000

# How often the reloading thread hands the interpreter back to the event loop.
RELOAD_SWITCH_INTERVAL_S = 0.001

_Stat = tuple[int, int, int, int, int]  # device, inode, size, mtime, ctime of the target


class ConfigFingerprint:
    """The ContentDigest of what load_config would read now. Only files whose stat changed
    are read again, so polling an unchanged 100k-tenant file costs a stat, not a hash."""

    def __init__(self, paths: Sequence[str]) -> None:
        self._paths = paths
        self._hashes: dict[str, tuple[_Stat, bytes]] = {}

    def digest(self) -> str:
        """The digest of the files as they are now; blocking, so run it in a thread."""
        files, errors = discover(self._paths)
        digest = ContentDigest()
        hashes: dict[str, tuple[_Stat, bytes]] = {}
        now = time.time_ns()
        for path in map(str, files):
            try:
                info = os.stat(path)
                stat = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
                cached = self._hashes.get(path)
                if cached is not None and cached[0] == stat:
                    content_hash = cached[1]
                else:
                    with open(path, "rb") as file:
                        content_hash = file_hash(file.read())
                if now - max(info.st_mtime_ns, info.st_ctime_ns) >= _RECENT_NS:
                    hashes[path] = (stat, content_hash)
            except OSError as exc:  # gone since discover(), e.g. in the middle of a swap
                content_hash = file_hash(str(exc).encode())
            digest.add(path, content_hash)
        for error in errors:
            digest.add(str(error), b"")
        self._hashes = hashes
        return digest.hexdigest()


def log_config(event: str, config: Config) -> None:
    """Log that this process now serves `config`: at start (config_loaded) and after each
    reload (config_reloaded), with the same fields."""
    log.info(
        event,
        pid=os.getpid(),
        domains=len(config.domains),
        rules=len(config.rules),
        digest=config.digest,
    )
    for warning in config.warnings:
        log.warning("config_warning", pid=os.getpid(), warning=warning)


@dataclass(slots=True)
class ConfigState:
    """The config in force and how reloads went, for logs and metrics."""

    digest: str  # the loader's ContentDigest of the files in force
    loaded_at: float  # Unix time
    reloads: dict[str, int] = field(default_factory=lambda: {"success": 0, "failure": 0})


class ConfigReloader:
    """Reloads the config when its files change or when asked, handing each valid new config
    to `apply` on the event loop; an invalid one is logged and counted, and changes nothing.

    The files are polled every `interval` seconds, and a change is loaded once it has held
    still for a whole interval, so a burst of writes makes one reload.
    """

    def __init__(
        self,
        paths: Sequence[str],
        defaults: Defaults,
        config: Config,
        apply: Callable[[Config], None],
        interval: float,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self.state = ConfigState(config.digest, time.time())
        self._paths = paths
        self._defaults = defaults
        self._apply = apply
        self._observer = observer
        self._interval = interval
        self._fingerprint = ConfigFingerprint(paths)
        self._requested = asyncio.Event()
        self._task: asyncio.Future[None] | None = None

    def request(self) -> None:
        """Reload now, whether or not the files changed (SIGHUP)."""
        self._requested.set()

    def start(self) -> None:
        """Start watching the files, on the running loop."""
        self._task = asyncio.ensure_future(self._watch())

    async def stop(self) -> None:
        """Stop watching."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def reload(self) -> bool:
        """Load the files and apply them if valid, otherwise log every error and keep the
        config in force; whether the new config was applied."""
        try:
            # Parsing a large config takes a while: off the loop (see _load).
            config = await self._load()
        except InvalidConfigError as exc:
            errors = [str(error) for error in exc.errors]
        except Exception as exc:  # e.g. RecursionError from absurd nesting: keep serving
            errors = [f"{type(exc).__name__}: {exc}"]
        else:
            self._apply(config)
            self.state.digest, self.state.loaded_at = config.digest, time.time()
            self.state.reloads["success"] += 1
            self._observer.config_reload(True)
            log_config("config_reloaded", config)
            return True
        self.state.reloads["failure"] += 1
        self._observer.config_reload(False)
        log.error("config_reload_failed", pid=os.getpid(), errors=errors)
        return False

    async def _load(self) -> Config:
        """The config the files hold now, parsed off the loop, which keeps answering; the loop
        gets the interpreter back every millisecond instead of every five meanwhile."""
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(switch_interval, RELOAD_SWITCH_INTERVAL_S))
        try:
            return await asyncio.to_thread(load_config, self._paths, self._defaults)
        finally:
            sys.setswitchinterval(switch_interval)

    async def _watch(self) -> None:
        seen = settled = self.state.digest  # settled: the digest last loaded or tried
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._requested.wait(), self._interval)
            requested = self._requested.is_set()
            self._requested.clear()
            digest = await asyncio.to_thread(self._fingerprint.digest)
            if requested or (digest == seen and digest != settled):
                # A failed load is not retried until the files change again; a good one is
                # compared by what it read, which may be newer than `digest`.
                settled = self.state.digest if await self.reload() else digest
            seen = digest
