"""REDIS_URL with REDIS_TYPE, REDIS_AUTH and REDIS_TLS*: the reference's Redis settings as one
RATELIMITD_REDIS_URL."""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import quote

from ratelimitd.app.reference_env.reader import InvalidError, Reader
from ratelimitd.app.reference_env.variables import REDIS, REDIS_TLS_FILES

_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[^\s:\[\],/@]+):(?P<port>[0-9]{1,5})")


class _Servers(NamedTuple):
    """Where REDIS_URL points: `hosts`, of a sentinel `master` or a cluster, or one server."""

    kind: str  # single, sentinel or cluster
    master: str  # "" unless sentinel
    hosts: list[str]

    def url(self, userinfo: str, query: str | None) -> str:
        """Our URL for these servers; `query` is None for no TLS, else a rediss:// query."""
        hosts = ",".join(self.hosts)
        if self.kind == "sentinel":
            return f"redis+sentinel://{userinfo}{hosts}/{quote(self.master, safe='')}"
        if self.kind == "cluster":
            return f"redis+cluster://{userinfo}{hosts}"
        scheme = "rediss" if query is not None else "redis"
        return f"{scheme}://{userinfo}{self.hosts[0]}{query or ''}"


def translate_redis(r: Reader) -> None:
    """REDIS_URL (host:port, or a list for sentinel and cluster) with REDIS_TYPE, REDIS_AUTH
    and REDIS_TLS* -> one RATELIMITD_REDIS_URL."""
    present = r.claim(REDIS, "RATELIMITD_REDIS_URL")
    if not present:
        return
    address = _address(r, present)
    servers = _servers(address, _kind(r, address))
    query = _tls_query(r, servers.kind)
    if "REDIS_SENTINEL_AUTH" in present:
        if servers.kind == "sentinel":
            raise InvalidError(
                "REDIS_SENTINEL_AUTH", "not supported: sentinels are asked without a password"
            )
        r.result.ignored["REDIS_SENTINEL_AUTH"] = "used only with REDIS_TYPE=sentinel"
    credentials = _credentials(r.value("REDIS_AUTH"))
    names = [name for name in present if name not in r.result.ignored]
    shown = servers.url("***@" if credentials else "", query)
    r.set("RATELIMITD_REDIS_URL", servers.url(credentials, query), names, shown)


def _address(r: Reader, present: list[str]) -> str:
    """REDIS_URL, which the other variables of `present` need, for the one backend we have."""
    backend = r.value("BACKEND_TYPE") or "redis"
    if backend.lower() != "redis":
        raise InvalidError("BACKEND_TYPE", f"'{backend}' is not supported (only redis)")
    address = r.value("REDIS_URL")
    if address is None:
        raise InvalidError(
            "REDIS_URL",
            f"not set, though {' and '.join(present)} {'is' if len(present) == 1 else 'are'}: "
            "the reference's default, a unix socket, is not supported; set REDIS_URL=host:port",
        )
    return address


def _kind(r: Reader, address: str) -> str:
    """REDIS_TYPE, checked with REDIS_SOCKET_TYPE: single, sentinel or cluster, over TCP."""
    kind = (r.value("REDIS_TYPE") or "single").lower()
    if kind not in ("single", "sentinel", "cluster"):
        raise InvalidError("REDIS_TYPE", f"'{kind}' is not single, sentinel or cluster")
    socket_type = (r.value("REDIS_SOCKET_TYPE") or "tcp").lower()
    if socket_type not in ("tcp", "unix"):
        raise InvalidError("REDIS_SOCKET_TYPE", f"'{socket_type}' is not tcp or unix")
    if kind == "single" and (socket_type == "unix" or address.startswith("/")):
        raise InvalidError(
            "REDIS_SOCKET_TYPE" if socket_type == "unix" else "REDIS_URL",
            "unix sockets are not supported: set REDIS_SOCKET_TYPE=tcp and REDIS_URL=host:port",
        )
    return kind


def _servers(address: str, kind: str) -> _Servers:
    """REDIS_URL as the reference takes it for `kind`: host:port, master_name,host:port... for
    sentinel, host:port,host:port... for cluster."""
    if "@" in address or "://" in address:  # not echoed: it may hold a password
        raise InvalidError(
            "REDIS_URL",
            "expected host:port as the reference takes it, with credentials in REDIS_AUTH "
            "(a redis:// URL goes in RATELIMITD_REDIS_URL)",
        )
    hosts = address.split(",")
    master = ""
    if kind == "sentinel":
        master, *hosts = hosts
        if not master or not hosts:
            raise InvalidError("REDIS_URL", "expected master_name,host:port[,host:port...]")
    elif kind == "single" and len(hosts) > 1:
        raise InvalidError("REDIS_URL", "a list of servers needs REDIS_TYPE=sentinel or cluster")
    for host in hosts:
        match = _HOST_PORT.fullmatch(host)
        if match is None or not 0 < int(match["port"]) < 65536:
            raise InvalidError("REDIS_URL", f"'{host}' is not host:port")
    return _Servers(kind, master, hosts)


def _tls_query(r: Reader, kind: str) -> str | None:
    """The query string of a rediss:// URL for REDIS_TLS and its file settings, or None for
    no TLS (then the file settings are reported as ignored, as the reference ignores them)."""
    if not r.flag("REDIS_TLS"):
        for name in (*REDIS_TLS_FILES, "REDIS_TLS_SKIP_HOSTNAME_VERIFICATION"):
            if r.value(name) is not None:
                r.result.ignored[name] = "REDIS_TLS is not true"
        return None
    if kind != "single":
        raise InvalidError("REDIS_TLS", f"TLS to a Redis {kind} is not supported")
    if (r.value("REDIS_TLS_CLIENT_CERT") is None) != (r.value("REDIS_TLS_CLIENT_KEY") is None):
        raise InvalidError("REDIS_TLS_CLIENT_CERT", "and REDIS_TLS_CLIENT_KEY go together")
    options = [
        f"{option}={quote(path, safe='/')}"
        for name, option in REDIS_TLS_FILES.items()
        if (path := r.value(name)) is not None
    ]
    if r.flag("REDIS_TLS_SKIP_HOSTNAME_VERIFICATION"):
        options.append("ssl_check_hostname=false")  # the certificate is still verified
    return ("?" + "&".join(options)) if options else ""


def _credentials(auth: str | None) -> str:
    """REDIS_AUTH (`password` or `user:password`, split at the first ':' as the reference
    does) as the percent-encoded userinfo of a URL, with its '@'."""
    if auth is None:
        return ""
    user, colon, password = auth.partition(":")
    if not colon:
        user, password = "", auth
    return f"{quote(user, safe='')}:{quote(password, safe='')}@"
