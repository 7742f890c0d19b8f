"""Where the RLQS front door keeps each bucket's demand per Envoy, so every replica splits a
quota from the same picture and a restarted replica picks up where it was: in memory (one
process) or in Redis (one hash per bucket, a field per Envoy, expiring when no Envoy
reports the bucket)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from ratelimitd.model.quota import Demand
from ratelimitd.storage.base import StoreError
from ratelimitd.storage.redis import client_from_url
from ratelimitd.storage.resp import RespError

KEY_PREFIX = "rlqs:"


class DemandStore(Protocol):
    """Demands by bucket (a key the caller names) and Envoy; StoreError when unreachable."""

    async def demands(self, bucket: str) -> dict[str, Demand]:
        """Every Envoy's last demand of the bucket."""
        ...

    async def record(self, bucket: str, demand: Demand, forget: Iterable[str], keep_s: int) -> None:
        """Set one Envoy's demand, drop the `forget` Envoys' and keep the bucket for `keep_s`
        seconds after its last record."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class MemoryDemand:
    """Demands of one process (the bucket's `keep_s` is left to the callers' `forget`)."""

    def __init__(self) -> None:
        self._buckets: dict[str, dict[str, Demand]] = {}

    async def demands(self, bucket: str) -> dict[str, Demand]:
        """Every Envoy's last demand of the bucket."""
        return dict(self._buckets.get(bucket, {}))

    async def record(self, bucket: str, demand: Demand, forget: Iterable[str], keep_s: int) -> None:
        """Set one Envoy's demand and drop the `forget` Envoys'."""
        clients = self._buckets.setdefault(bucket, {})
        for client in forget:
            clients.pop(client, None)
        clients[demand.client] = demand

    async def close(self) -> None:
        """Nothing to release."""


def _encode(demand: Demand) -> str:
    rate = "-" if demand.rate is None else repr(demand.rate)
    return f"{rate} {demand.seen_us} {demand.interval_s!r} {demand.assigned!r}"


def _decode(client: str, text: str) -> Demand | None:
    try:
        rate, seen, interval, assigned = text.split(" ")
        measured = None if rate == "-" else float(rate)
        return Demand(client, measured, int(seen), float(interval), float(assigned))
    except ValueError:
        return None  # written by something else: not ours to read


class RedisDemand:
    """Demands in one Redis server: hash `rlqs:<bucket>`, field per Envoy."""

    def __init__(self, url: str, timeout: float) -> None:
        self._client = client_from_url(url, timeout)

    async def demands(self, bucket: str) -> dict[str, Demand]:
        """Every Envoy's last demand of the bucket."""
        try:
            reply = await self._client.execute("HGETALL", KEY_PREFIX + bucket)
        except (RespError, TimeoutError, ConnectionError, OSError) as exc:
            raise StoreError(f"reading demand: {exc}") from exc
        found = {}
        for field, value in zip(reply[::2], reply[1::2], strict=True):
            client = field.decode()
            demand = _decode(client, value.decode())
            if demand is not None:
                found[client] = demand
        return found

    async def record(self, bucket: str, demand: Demand, forget: Iterable[str], keep_s: int) -> None:
        """Set one Envoy's demand, drop the `forget` Envoys' and keep the hash `keep_s`."""
        key = KEY_PREFIX + bucket
        try:
            stale = list(forget)
            if stale:
                await self._client.execute("HDEL", key, *stale)
            await self._client.execute("HSET", key, demand.client, _encode(demand))
            await self._client.execute("EXPIRE", key, keep_s)
        except (RespError, TimeoutError, ConnectionError, OSError) as exc:
            raise StoreError(f"recording demand: {exc}") from exc

    async def close(self) -> None:
        """Close the connection."""
        await self._client.aclose()


def build_demand_store(url: str | None, timeout: float) -> DemandStore | None:
    """The demand store beside the counters `url` names: Redis for a redis:// or rediss://
    URL, memory without one; None for Sentinel and Cluster (not supported yet)."""
    if url is None:
        return MemoryDemand()
    if not url.startswith(("redis://", "rediss://")):
        return None
    return RedisDemand(url, timeout)
