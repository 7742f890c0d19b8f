"""The RLQS front door of one worker, wired from settings: its demand store (beside the
counters: memory, or the same single Redis) and the QuotaRpc the transports serve."""

from __future__ import annotations

import structlog

from ratelimitd.app.settings import Settings
from ratelimitd.core.engine import Engine
from ratelimitd.model.observer import Observer
from ratelimitd.storage.clock import wall_clock_us
from ratelimitd.storage.demand import DemandStore, build_demand_store
from ratelimitd.transports.rlqs_rpc import QuotaRpc

log = structlog.get_logger(__name__)


def quota_rpc(
    settings: Settings, engine: Engine, observer: Observer
) -> tuple[QuotaRpc, DemandStore] | None:
    """The front door on `engine`'s running config, reporting to `observer`, and its store
    to close at the end; None (logged) where demand cannot be shared (Sentinel, Cluster)."""
    demand = build_demand_store(settings.redis_url, settings.redis_timeout)
    if demand is None:
        log.warning("rlqs_not_served", reason="demand is shared through a single Redis only")
        return None
    return QuotaRpc(lambda: engine.config, demand, wall_clock_us, observer), demand
