"""Health: whether this process should receive traffic, and whether its store answers; what
the gRPC health service and the /healthcheck endpoint report."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ratelimitd.storage.base import Store

HEALTH_PING_TIMEOUT_S = 1.0


@dataclass(slots=True)
class Readiness:
    """Whether the process should receive traffic (false while starting and draining)."""

    serving: bool = False


async def store_answers(store: Store) -> bool:
    """Whether the store answers a ping, within HEALTH_PING_TIMEOUT_S whatever its own
    timeout: a probe must get an answer quickly."""
    try:
        return await asyncio.wait_for(store.ping(), HEALTH_PING_TIMEOUT_S)
    except TimeoutError:
        return False
