"""Redis store on one server (a single instance, or the master Sentinel names): one Lua script
call evaluates a whole batch of requests, each atomically and all-or-nothing, with Redis `TIME`
as the clock for every replica. The script machinery here also serves the cluster store."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from ratelimitd.algorithms import ALGORITHMS, Hit, Outcome
from ratelimitd.config.model import Limit
from ratelimitd.storage.base import StoreError
from ratelimitd.storage.batching import TickBatcher
from ratelimitd.storage.clock import Clock

REQUEST_DRIVER = "request.lua"
REFUND_DRIVER = "refund.lua"


def script_source(driver: str = REQUEST_DRIVER) -> str:
    """A script: every algorithm's functions (evaluation and refund), the clock, then
    `driver`: the batch evaluation of lua/request.lua or the refunds of lua/refund.lua."""
    lua = resources.files("ratelimitd").joinpath("lua")
    parts = ["local algorithms, refunds = {}, {}"]
    parts += [lua.joinpath(f"{name}.lua").read_text() for name in sorted(ALGORITHMS)]
    parts += [lua.joinpath("clock.lua").read_text(), lua.joinpath(driver).read_text()]
    return "\n".join(parts)


# Bounded: requests' limit overrides make new limits without end.
@functools.lru_cache(maxsize=4096)
def _limit_tokens(limit: Limit) -> str:
    return f"{limit.algorithm} {limit.requests_per_unit} {limit.unit_us} {limit.burst}"


def encode(
    requests: Sequence[Sequence[Hit]], now: str, dry_run: bool = False
) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of one script call evaluating `requests` in order (see lua/request.lua);
    with `dry_run` the script answers the same but writes nothing."""
    keys: list[str] = []
    tokens = [str(len(requests))]
    for hits in requests:
        tokens.append(str(len(hits)))
        for hit in hits:
            keys.append(hit.key)
            limit = hit.limit
            tokens += (
                _limit_tokens(limit),
                str(limit.overdraft),
                str(hit.cost),
                "1" if hit.shadow else "0",
            )
    args = [now, " ".join(tokens)]
    if dry_run:
        args.append("dry")
    return keys, args


def encode_refunds(refunds: Sequence[tuple[Hit, int]], now: str) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of one refund script call (see lua/refund.lua): each admitted hit to give
    back, with the reset the request script reported for it."""
    keys = [hit.key for hit, _ in refunds]
    tokens = [f"{_limit_tokens(hit.limit)} {hit.cost} {reset_us}" for hit, reset_us in refunds]
    return keys, [now, " ".join(tokens)]


def decode(requests: Sequence[Sequence[Hit]], raw: Sequence[int]) -> list[list[Outcome]]:
    """Split the script's flat reply into one outcome list per request."""
    results = []
    at = 0
    for hits in requests:
        results.append(
            [
                Outcome(raw[i] == 1, int(raw[i + 1]), int(raw[i + 2]))
                for i in range(at, at + 3 * len(hits), 3)
            ]
        )
        at += 3 * len(hits)
    return results


class Script(NamedTuple):
    """A script as Redis caches it: its source and the SHA1 it is called by."""

    source: str
    sha: str


def load_script(driver: str) -> Script:
    """The script of `driver` (see script_source)."""
    source = script_source(driver)
    return Script(source, hashlib.sha1(source.encode()).hexdigest())


class ScriptRunner:
    """Builds the stores' script calls, with Redis TIME as now unless `clock` (tests only)
    replaces it, and runs request scripts on one server, loading the script again when Redis
    lost it."""

    def __init__(self, clock: Clock | None) -> None:
        self.request = load_script(REQUEST_DRIVER)
        self.refund = load_script(REFUND_DRIVER)
        self._clock = clock

    def request_call(self, requests: Sequence[Sequence[Hit]], dry_run: bool = False) -> list[Any]:
        """EVALSHA arguments evaluating `requests` in order (see lua/request.lua); committing
        nothing with `dry_run`."""
        keys, args = encode(requests, self._now(), dry_run)
        return [self.request.sha, len(keys), *keys, *args]

    def refund_call(self, refunds: Sequence[tuple[Hit, int]]) -> list[Any]:
        """EVALSHA arguments giving back `refunds` (see lua/refund.lua)."""
        keys, args = encode_refunds(refunds, self._now())
        return [self.refund.sha, len(keys), *keys, *args]

    def _now(self) -> str:
        return str(self._clock()) if self._clock else ""

    async def run(
        self, client: aioredis.Redis | Any, requests: Sequence[Sequence[Hit]], dry_run: bool = False
    ) -> list[list[Outcome]]:
        """Evaluate (and unless `dry_run`, commit) `requests` in one call; raise StoreError
        when Redis cannot answer."""
        call = self.request_call(requests, dry_run)
        try:
            try:
                raw = await client.evalsha(*call)
            except NoScriptError:
                # Redis restarted or flushed its script cache: load the script, retry once.
                await client.script_load(self.request.source)
                raw = await client.evalsha(*call)
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreError(f"redis: {exc.__class__.__name__}: {exc}") from exc
        return decode(requests, raw)


class ClientStore:
    """Counters in the Redis server a redis-py client talks to: a single instance, or the
    master that Sentinel points at. Any number of replicas can share it.

    With `batch` (the default), requests submitted in one event-loop tick share one script
    call. `clock` exists for tests only: it replaces Redis TIME as the script's notion of
    now, so the memory store and Redis can be compared step by step.
    """

    def __init__(
        self, client: aioredis.Redis, *, clock: Clock | None = None, batch: bool = True
    ) -> None:
        self._client = client
        self._script = ScriptRunner(clock)
        self._batcher = TickBatcher(self._send) if batch else None
        self.round_trips = 0

    async def apply(self, hits: Sequence[Hit]) -> list[Outcome]:
        """Evaluate and commit one request's hits; raise StoreError on failure."""
        if self._batcher is not None:
            return await self._batcher.submit(hits)
        return (await self._send([hits]))[0]

    async def peek(self, hits: Sequence[Hit]) -> list[Outcome]:
        """What apply(hits) would answer now, from a dry run of the same script; raise
        StoreError on failure."""
        # Never batched: a dry run cannot share a call with requests that must commit.
        return (await self._send([hits], dry_run=True))[0]

    async def _send(
        self, requests: list[Sequence[Hit]], dry_run: bool = False
    ) -> list[list[Outcome]]:
        self.round_trips += 1
        return await self._script.run(self._client, requests, dry_run)

    async def ping(self) -> bool:
        """True when Redis answers PING within the timeout."""
        try:
            return bool(await self._client.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._client.aclose()


class RedisStore(ClientStore):
    """A single Redis server, named by a redis:// or rediss:// URL."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.05,
        clock: Clock | None = None,
        max_connections: int = 64,
        batch: bool = True,
    ) -> None:
        # A blocking pool waits (up to the timeout) for a free connection instead of failing
        # at once when every connection is busy.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        super().__init__(aioredis.Redis.from_pool(pool), clock=clock, batch=batch)
