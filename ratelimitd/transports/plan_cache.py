"""Plans of recent requests, kept by the request's wire bytes (or, for requests built from
extracted values, by the Request itself): a repeated request skips decoding as well as
matching. The engine stays cache-free; the transport side, which has the bytes, keeps this.
"""

from __future__ import annotations

from collections.abc import Callable

from ratelimitd.core.engine import Engine
from ratelimitd.core.plan import Plan
from ratelimitd.model.messages import Request

# Plans of this many distinct requests are kept (then all dropped and rebuilt as they come).
PLAN_CACHE_SIZE = 10_000
# Only requests up to this size get a cached plan (Envoy's are a few hundred bytes).
PLAN_CACHE_MAX_REQUEST_BYTES = 2048


class PlanCache:
    """The engine's plans by serialized or built request, dropped whenever the engine's
    config is replaced (a reload): a plan follows the config it was made from."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._config = engine.config
        self._plans: dict[bytes | Request, Plan] = {}

    def for_wire(self, data: bytes, decode: Callable[[bytes], Request]) -> Plan:
        """The plan of the request serialized as `data`, built from `decode(data)` the first
        time. Raises InvalidRequestError for malformed input (and whatever `decode` raises).
        """
        # Asked on every call, so that the engine needs no listeners: one comparison.
        if self._engine.config is not self._config:
            self._follow_config()
        plan = self._plans.get(data)
        if plan is None:
            plan = self._engine.plan(decode(data))
            # Large requests are rare and would make the cache's memory grow with their size.
            if len(data) <= PLAN_CACHE_MAX_REQUEST_BYTES:
                self._remember(data, plan)
        return plan

    def for_request(self, request: Request) -> Plan:
        """The plan of `request`, kept for the next equal one: for requests built from values
        of bounded size (ext_authz extraction). Raises InvalidRequestError for malformed
        input."""
        if self._engine.config is not self._config:
            self._follow_config()
        plan = self._plans.get(request)
        if plan is None:
            plan = self._engine.plan(request)
            self._remember(request, plan)
        return plan

    def _follow_config(self) -> None:
        self._config = self._engine.config
        self._plans = {}

    def _remember(self, key: bytes | Request, plan: Plan) -> None:
        if len(self._plans) >= PLAN_CACHE_SIZE:
            self._plans.clear()  # cheaper than LRU bookkeeping on every hit
        self._plans[key] = plan
