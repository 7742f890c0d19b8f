"""The store a Redis URL names, by scheme (the Python convention, as in redis-py and kombu):

    redis://[[user:]password@]host:port[/db]           one Redis server
    rediss://[[user:]password@]host:port[/db]          the same over TLS
    redis+sentinel://[[user:]password@]host:port[,host:port...]/master_name[/db]
    redis+cluster://[[user:]password@]host:port[,host:port...]

No URL means the in-memory store. Sentinel and cluster URLs list any number of sentinels or
cluster nodes to start from; a host without a port gets the default port (26379 for a
sentinel, 6379 for a cluster node). The credentials are the Redis servers', percent-encoded.
Errors name the problem but never the password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from ratelimitd.model.observer import NO_OBSERVER, Observer
from ratelimitd.storage.base import Store
from ratelimitd.storage.breaker import CircuitBreaker
from ratelimitd.storage.clock import Clock, wall_clock_us
from ratelimitd.storage.cluster import ClusterStore
from ratelimitd.storage.memory import DEFAULT_MAX_KEYS, MemoryStore
from ratelimitd.storage.redis import RedisStore
from ratelimitd.storage.sentinel import SentinelStore

SENTINEL = "redis+sentinel"
CLUSTER = "redis+cluster"
_SINGLE = ("redis", "rediss")
_DEFAULT_PORTS = {SENTINEL: 26379, CLUSTER: 6379}
_EXPECTED = "expected redis://, rediss://, redis+sentinel:// or redis+cluster://"
_DIGITS = re.compile(r"[0-9]+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_HOST = re.compile(r"(?:\[(?P<ipv6>[^\]]+)\]|(?P<name>[^:\[\]]+))(?::(?P<port>[0-9]+))?")


@dataclass(frozen=True)
class Servers:
    """What a redis+sentinel:// or redis+cluster:// URL names."""

    scheme: str
    hosts: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    service_name: str = ""  # the sentinels' name of the master
    db: int = 0


def redact(url: str) -> str:
    """The URL without credentials, for logs (whatever precedes the last '@' of its host
    part: `user:password@`, or a Sentinel URL's lone `password@`)."""
    scheme, sep, rest = url.partition("://")
    location, slash, path = rest.partition("/")
    if "@" not in location:
        return url
    return f"{scheme}{sep}***@{location.rpartition('@')[2]}{slash}{path}"


def build_store(
    url: str | None,
    *,
    timeout: float,
    clock: Clock | None = None,
    memory_max_keys: int = DEFAULT_MAX_KEYS,
    observer: Observer = NO_OBSERVER,
    breaker: CircuitBreaker | None = None,
) -> Store:
    """The store `url` names, or the in-memory store (of at most `memory_max_keys` counters)
        for None. `timeout` bounds every Redis call in seconds; `clock` (tests only) replaces Redis
        TIME, or the memory store's clock; `observer` hears of every batch sent to Redis;
    `breaker` guards the round trips to Redis (the memory store has none).

        Raises ValueError, naming the problem, for an unknown scheme or a malformed URL.
    """
    if url is None:
        return MemoryStore(clock or wall_clock_us, memory_max_keys)
    scheme = _scheme(url)
    if scheme in _SINGLE:
        # redis-py would quietly use database 0 for a path that is not a number.
        database = _location(url).partition("?")[0].partition("/")[2].rstrip("/")
        if database:
            _database(database, scheme)
        try:
            return RedisStore(url, timeout=timeout, clock=clock, observer=observer, breaker=breaker)
        except ValueError as exc:
            # redis-py's messages quote the bad part (a port, an option), never the password.
            raise ValueError(f"{scheme} URL: {exc}") from None
    servers = parse_servers(url)
    if servers.scheme == SENTINEL:
        return SentinelStore(
            servers.hosts,
            servers.service_name,
            timeout=timeout,
            username=servers.username,
            password=servers.password,
            db=servers.db,
            clock=clock,
            observer=observer,
            breaker=breaker,
        )
    return ClusterStore(
        servers.hosts,
        timeout=timeout,
        username=servers.username,
        password=servers.password,
        clock=clock,
        observer=observer,
        breaker=breaker,
    )


def parse_servers(url: str) -> Servers:
    """Parse a redis+sentinel:// or redis+cluster:// URL; ValueError names what is wrong."""
    scheme = _scheme(url)
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"'{scheme}://' is not a sentinel or cluster URL scheme")
    userinfo, at, _ = url.partition("://")[2].rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    location = _location(url)
    if "?" in location or "#" in location:
        raise ValueError(f"{scheme} URL: query strings and fragments are not supported")
    host_list, _, path = location.partition("/")
    hosts = tuple(_host(entry, scheme) for entry in host_list.split(","))
    if scheme == CLUSTER:
        if path:
            raise ValueError(
                f"{scheme} URL: unexpected path '/{path}' (a cluster has only database 0)"
            )
        return Servers(scheme, hosts, username, password)
    expected = f"expected {scheme}://host:port/master_name[/db]"
    service_name, *database = path.rstrip("/").split("/")
    if not service_name:
        raise ValueError(f"{scheme} URL names no master: {expected}")
    if len(database) > 1:
        raise ValueError(f"{scheme} URL: unexpected path '/{path}': {expected}")
    db = _database(database[0], scheme) if database else 0
    return Servers(scheme, hosts, username, password, unquote(service_name), db)


def _scheme(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        raise ValueError(f"the Redis URL has no scheme: {_EXPECTED}")
    scheme = scheme.lower()
    if scheme not in (*_SINGLE, *_DEFAULT_PORTS):
        raise ValueError(f"unsupported Redis URL scheme '{scheme}://': {_EXPECTED}")
    return scheme


def _location(url: str) -> str:
    """Hosts, path and query: what follows the last '@' (which ends the credentials), and so
    all that error messages may quote."""
    return url.partition("://")[2].rpartition("@")[2]


def _database(text: str, scheme: str) -> int:
    if not _DIGITS.fullmatch(text):
        raise ValueError(f"{scheme} URL: database '{text}' is not a number")
    return int(text)


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    """(username, password) of `[[user:]password]`: a lone word is a password."""
    user, colon, password = userinfo.partition(":")
    if not colon:
        user, password = "", user
    return unquote(user) or None, unquote(password) or None


def _host(entry: str, scheme: str) -> tuple[str, int]:
    if not entry:
        raise ValueError(f"{scheme} URL: empty host (expected host:port[,host:port...])")
    match = _HOST.fullmatch(entry)
    if match is None:
        raise ValueError(f"{scheme} URL: '{entry}' is not host:port")
    port = int(match["port"]) if match["port"] else _DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        raise ValueError(f"{scheme} URL: port {port} of '{entry}' is out of range")
    return match["ipv6"] or match["name"], port
