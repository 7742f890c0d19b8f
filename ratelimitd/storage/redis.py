"""Redis store on one server (a single instance, or the master Sentinel names): one Lua script
call evaluates a whole batch of requests, each atomically and all-or-nothing, with Redis `TIME`
as the clock for every replica, over a pipelined connection (storage/resp). The script
machinery here also serves the cluster store."""

from __future__ import annotations

import functools
import hashlib
import ssl
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.asyncio.connection import RedisSSLContext
from redis.exceptions import RedisError

from ratelimitd.algorithms import ALGORITHMS, Hit, Outcome
from ratelimitd.algorithms.concurrency import Claim, Taken
from ratelimitd.algorithms.windows import boundaries
from ratelimitd.model.observer import NO_OBSERVER, Observer
from ratelimitd.model.rules import Limit
from ratelimitd.storage.base import StoreError
from ratelimitd.storage.breaker import CircuitBreaker
from ratelimitd.storage.clock import Clock, wall_clock_us
from ratelimitd.storage.resp import RespClient, RespError
from ratelimitd.storage.round_trips import RoundTripStore

# Error replies that mean the server is not (or no longer) the master.
_WRONG_SERVER = ("READONLY", "MASTERDOWN")
REQUEST_DRIVER = "request.lua"
REFUND_DRIVER = "refund.lua"


def script_source(driver: str = REQUEST_DRIVER) -> str:
    """A script: the state encoding of lua/state.lua, windows (lua/window.lua), every
    algorithm's functions (evaluation and refund), the clock, then `driver`: the batch
    evaluation of lua/request.lua or the refunds of lua/refund.lua."""
    lua = resources.files("ratelimitd").joinpath("lua")
    parts = ["local algorithms, refunds = {}, {}"]
    parts += [lua.joinpath(name).read_text() for name in ("state.lua", "window.lua")]
    parts += [lua.joinpath(f"{name}.lua").read_text() for name in sorted(ALGORITHMS)]
    parts += [lua.joinpath("clock.lua").read_text(), lua.joinpath(driver).read_text()]
    return "\n".join(parts)


# Bounded: requests' limit overrides make new limits without end.
@functools.lru_cache(maxsize=4096)
def _limit_tokens(limit: Limit) -> str:
    return f"{limit.algorithm} {limit.requests_per_unit} {limit.unit_us} {limit.burst}"


def limit_tokens(limit: Limit, now_us: int) -> str:
    """A limit's tokens: algorithm, requests_per_unit, window, burst. The window is its length
    in us or, for a calendar window, the boundaries around `now_us`, the replica's time,
    among which the script picks by Redis' time (lua/window.lua)."""
    if limit.calendar_zone is None:
        return _limit_tokens(limit)
    bounds = ",".join(str(bound) for bound in boundaries(limit, now_us))
    return f"{limit.algorithm} {limit.requests_per_unit} {bounds} {limit.burst}"


def tokens_valid(hits: Sequence[Hit], now_us: int) -> tuple[int, int]:
    """From when until when hit_tokens(hits, now_us) stays the same: always, unless a hit has
    a calendar window, whose boundaries move on when its window ends."""
    since, until = 0, _FOREVER
    for hit in hits:
        if hit.limit.calendar_zone is not None:
            bounds = boundaries(hit.limit, now_us)
            since, until = max(since, bounds[1]), min(until, bounds[2])
    return since, until


def hit_tokens(hits: Sequence[Hit], now_us: int) -> str:
    """One request's shape in the script's batch argument (see lua/request.lua): each hit's
    limit, overdraft, cost and role (plain, shadow or quota)."""
    tokens: list[str] = []
    for hit in hits:
        limit = hit.limit
        tokens += (
            limit_tokens(limit, now_us),
            str(limit.overdraft),
            str(hit.cost),
            "1" if hit.shadow else "2" if hit.quota else "0",
        )
    return " ".join(tokens)


def encode(
    requests: Sequence[Sequence[Hit]],
    now: str,
    tokens: Callable[[Sequence[Hit]], str],
    dry_run: bool = False,
) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of one script call evaluating `requests` in order (see lua/request.lua);
    with `dry_run` the script answers the same but writes nothing. `tokens` is hit_tokens at
    the replica's time, or a memo of it. Each distinct shape is sent once: a batch is mostly
    the same few requests, and Redis parses what it is sent on its one thread."""
    keys: list[str] = []
    shapes: dict[str, str] = {}
    numbers = []
    for hits in requests:
        keys += [hit.key for hit in hits]
        shape = tokens(hits)
        number = shapes.get(shape)
        if number is None:
            number = shapes[shape] = str(len(shapes) + 1)
        numbers.append(number)
    args = [now, ";".join(shapes), " ".join(numbers)]
    if dry_run:
        args.append("dry")
    return keys, args


def encode_refunds(
    refunds: Sequence[tuple[Hit, int]], now: str, now_us: int
) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of one refund script call (see lua/refund.lua): each admitted hit to give
    back, with the reset the request script reported for it."""
    keys = [hit.key for hit, _ in refunds]
    tokens = [
        f"{limit_tokens(hit.limit, now_us)} {hit.cost} {reset_us}" for hit, reset_us in refunds
    ]
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
    return _script(script_source(driver))


def _script(source: str) -> Script:
    return Script(source, hashlib.sha1(source.encode()).hexdigest())


def _slots_script() -> Script:
    """The concurrency slots' script: the clock, then lua/concurrency.lua."""
    lua = resources.files("ratelimitd").joinpath("lua")
    return _script("\n".join(lua.joinpath(n).read_text() for n in ("clock.lua", "concurrency.lua")))


_SLOTS = _slots_script()


# Requests' tokens kept by the hits object they were made from (see ScriptRunner._tokens).
_TOKENS_KEPT = 10_000
_FOREVER = 2**63


class ScriptRunner:
    """Builds the stores' script calls, with Redis TIME as now unless `clock` (tests only)
    replaces it, and runs request scripts on one server, loading the script again when Redis
    lost it."""

    def __init__(self, clock: Clock | None) -> None:
        self.request = load_script(REQUEST_DRIVER)
        self.refund = load_script(REFUND_DRIVER)
        self._clock = clock
        # id(hits) -> (hits, their tokens, from when until when the tokens hold)
        self._tokens_of: dict[int, tuple[Sequence[Hit], str, int, int]] = {}

    def _tokens(self, hits: Sequence[Hit], now_us: int) -> str:
        """hit_tokens(hits, now_us), kept by identity while they hold: the engine plans a
        request once and passes the same hits object for every identical request."""
        kept = self._tokens_of.get(id(hits))
        if kept is not None and kept[0] is hits and kept[2] <= now_us < kept[3]:
            return kept[1]
        tokens = hit_tokens(hits, now_us)
        if len(self._tokens_of) >= _TOKENS_KEPT:
            self._tokens_of.clear()
        # Holding `hits` keeps its id from being reused while the entry exists.
        self._tokens_of[id(hits)] = (hits, tokens, *tokens_valid(hits, now_us))
        return tokens

    def request_call(self, requests: Sequence[Sequence[Hit]], dry_run: bool = False) -> list[Any]:
        """EVALSHA arguments evaluating `requests` in order (see lua/request.lua); committing
        nothing with `dry_run`."""
        now, now_us = self._now()
        keys, args = encode(requests, now, lambda hits: self._tokens(hits, now_us), dry_run)
        return [self.request.sha, len(keys), *keys, *args]

    def refund_call(self, refunds: Sequence[tuple[Hit, int]]) -> list[Any]:
        """EVALSHA arguments giving back `refunds` (see lua/refund.lua)."""
        keys, args = encode_refunds(refunds, *self._now())
        return [self.refund.sha, len(keys), *keys, *args]

    def _now(self) -> tuple[str, int]:
        """The script's time argument ("": Redis TIME) and the replica's time, around which
        calendar windows' boundaries are computed."""
        if self._clock is None:
            return "", wall_clock_us()
        now_us = self._clock()
        return str(now_us), now_us

    async def run(
        self, client: RespClient, requests: Sequence[Sequence[Hit]], dry_run: bool = False
    ) -> list[list[Outcome]]:
        """Evaluate (and unless `dry_run`, commit) `requests` in one call; raise StoreError
        when Redis cannot answer."""
        raw = await evalsha(client, self.request, self.request_call(requests, dry_run))
        return decode(requests, raw)

    def now_argument(self) -> str:
        """A script's time argument: "" for Redis TIME, the test clock's time otherwise."""
        return self._now()[0]


async def evalsha(client: RespClient, script: Script, call: Sequence[Any]) -> Any:
    """EVALSHA `call` (the sha, the key count, keys, arguments), loading `script` again when
    Redis lost it; StoreError when Redis cannot answer."""
    try:
        try:
            return await client.execute("EVALSHA", *call)
        except RespError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            # Redis restarted or flushed its script cache: load the script, retry once.
            await client.execute("SCRIPT", "LOAD", script.source)
            return await client.execute("EVALSHA", *call)
    except RespError as exc:
        if str(exc).startswith(_WRONG_SERVER):
            # A replica now (a failover): the next call connects to whoever is master.
            await client.aclose()
        raise StoreError(f"redis: {exc.__class__.__name__}: {exc}") from exc
    except (OSError, TimeoutError) as exc:
        raise StoreError(f"redis: {exc.__class__.__name__}: {exc}") from exc


class ClientStore(RoundTripStore):
    """Counters in the Redis server a RespClient talks to: a single instance, or the master
    that Sentinel points at. Any number of replicas can share it.

    With `batch` (the default), requests submitted in one event-loop tick share one script
    call. `clock` exists for tests only: it replaces Redis TIME as the script's notion of
    now, so the memory store and Redis can be compared step by step.
    """

    def __init__(
        self,
        client: RespClient,
        *,
        clock: Clock | None = None,
        batch: bool = True,
        observer: Observer = NO_OBSERVER,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        super().__init__(batch=batch, observer=observer, breaker=breaker)
        self._client = client
        self._script = ScriptRunner(clock)
        self.round_trips = 0

    async def _send(
        self, requests: list[Sequence[Hit]], dry_run: bool = False
    ) -> list[list[Outcome]]:
        self.round_trips += 1
        return await self._script.run(self._client, requests, dry_run)

    async def take_slots(self, claims: Sequence[Claim], holder: str, lease_us: int) -> Taken:
        """Take a slot of every claim for `holder`, or none (lua/concurrency.lua): one round
        trip. StoreError when Redis cannot answer."""
        capacities = [str(claim.capacity) for claim in claims]
        raw = await self._slots_call([c.key for c in claims], "take", holder, lease_us, capacities)
        return Taken(raw[0] == 1, tuple(int(n) for n in raw[1:]))

    async def renew_slots(self, keys: Sequence[str], holder: str, lease_us: int) -> int:
        """Extend `holder`'s live leases on `keys`; how many were live."""
        return int(await self._slots_call(keys, "renew", holder, lease_us))

    async def release_slots(self, keys: Sequence[str], holder: str) -> None:
        """Give `holder`'s slots on `keys` back: one round trip."""
        await self._slots_call(keys, "release", holder, 0)

    async def _slots_call(
        self,
        keys: Sequence[str],
        op: str,
        holder: str,
        lease_us: int,
        capacities: Sequence[str] = (),
    ) -> Any:
        now = self._script.now_argument()
        call = [_SLOTS.sha, len(keys), *keys, now, op, holder, str(lease_us), *capacities]
        return await evalsha(self._client, _SLOTS, call)

    async def ping(self) -> bool:
        """True when Redis answers PING within the timeout."""
        return await self._client.ping()

    async def close(self) -> None:
        """Close the connection."""
        await self._client.aclose()


# redis-py's names for a URL's TLS options, as RedisSSLContext's parameters.
_TLS_OPTIONS = {
    "ssl_keyfile": "keyfile",
    "ssl_certfile": "certfile",
    "ssl_cert_reqs": "cert_reqs",
    "ssl_include_verify_flags": "include_verify_flags",
    "ssl_exclude_verify_flags": "exclude_verify_flags",
    "ssl_ca_certs": "ca_certs",
    "ssl_ca_data": "ca_data",
    "ssl_ca_path": "ca_path",
    "ssl_check_hostname": "check_hostname",
    "ssl_min_version": "min_version",
    "ssl_ciphers": "ciphers",
    "ssl_password": "password",
}
_URL_PARTS = {"host", "port", "db", "username", "password", "connection_class"}


def client_from_url(url: str, timeout: float) -> RespClient:
    """A RespClient for a redis:// or rediss:// URL (redis-py's URL syntax and TLS options:
    ssl_ca_certs, ssl_certfile, ssl_keyfile, ssl_cert_reqs, ssl_check_hostname, ...).
    ValueError names an option that does not apply."""
    options: dict[str, Any] = dict(aioredis.connection.parse_url(url))
    unknown = sorted(set(options) - _URL_PARTS - set(_TLS_OPTIONS))
    if unknown:
        raise ValueError(
            f"unsupported URL option {unknown[0]!r} (timeouts are --redis-timeout; TLS "
            f"options: {', '.join(sorted(_TLS_OPTIONS))})"
        )
    tls = url.lower().startswith("rediss://")
    if not tls and set(options) & set(_TLS_OPTIONS):
        raise ValueError("TLS options need a rediss:// URL")
    context = None
    if tls:
        # As redis-py's TLS connections: the certificate and the host name are verified.
        settings: dict[str, Any] = {"cert_reqs": "required", "check_hostname": True}
        settings |= {_TLS_OPTIONS[k]: v for k, v in options.items() if k in _TLS_OPTIONS}
        try:
            context = RedisSSLContext(**settings).get()
        except (RedisError, OSError, ssl.SSLError) as exc:
            raise ValueError(f"TLS options: {exc}") from None
    host, port = options.get("host", "localhost"), int(options.get("port", 6379))

    async def address() -> tuple[str, int]:
        return host, port

    return RespClient(
        address,
        timeout=timeout,
        username=options.get("username"),
        password=options.get("password"),
        db=int(options.get("db", 0)),
        ssl_context=context,
    )


class RedisStore(ClientStore):
    """A single Redis server, named by a redis:// or rediss:// URL."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.05,
        clock: Clock | None = None,
        batch: bool = True,
        observer: Observer = NO_OBSERVER,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        super().__init__(
            client_from_url(url, timeout),
            clock=clock,
            batch=batch,
            observer=observer,
            breaker=breaker,
        )
