"""Redis behind Sentinel: the single-instance store, talking to whichever server the sentinels
name as master of a service, so it follows a failover."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

from ratelimitd.model.observer import NO_OBSERVER, Observer
from ratelimitd.storage.breaker import CircuitBreaker
from ratelimitd.storage.clock import Clock
from ratelimitd.storage.redis import ClientStore
from ratelimitd.storage.resp import RespClient, RespConnectionError


class SentinelStore(ClientStore):
    """Counters in the master of `service_name`, asked of `sentinels` on every new connection.

    After a failover the old master's connections fail (it answers READONLY or not at all):
    those calls raise StoreError, so the rules' failure modes answer, and the next calls
    connect to the new master. `username` and `password` are the master's; the sentinels
    are asked without authentication.
    """

    def __init__(
        self,
        sentinels: Sequence[tuple[str, int]],
        service_name: str,
        *,
        timeout: float = 0.05,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        clock: Clock | None = None,
        observer: Observer = NO_OBSERVER,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        # redis-py asks the sentinels; the master's connection is ours (storage/resp), opened
        # again at whatever address they name after a failover. (redis-py leaves Sentinel's
        # constructor unannotated.)
        self._sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(sentinels), socket_timeout=timeout, socket_connect_timeout=timeout
        )
        sentinel = self._sentinel

        async def master() -> tuple[str, int]:
            try:
                host, port = await sentinel.discover_master(service_name)
            except RedisError as exc:
                raise RespConnectionError(f"sentinels: {exc}") from exc
            return str(host), int(port)

        client = RespClient(master, timeout=timeout, username=username, password=password, db=db)
        super().__init__(client, clock=clock, observer=observer, breaker=breaker)

    async def close(self) -> None:
        """Close the master's and the sentinels' connections."""
        await super().close()
        await self._sentinel.aclose()
