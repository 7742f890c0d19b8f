"""What every door of the in-app middleware shares: one engine (the sidecar's YAML, algorithms
and counters), the domain its limits are read from, and the answer to one request: admitted
with rate limit headers, or rejected as the sidecar rejects through Envoy (429 with
Retry-After, the headers and the problem+json body; 503 where a rule's failure mode is
`unavailable`).

Concurrency limits are taken here, before the rate limits: a slot is taken when the request
is admitted and given back when it ends (Admission.end), leased and renewed meanwhile so a
worker that dies holding one loses it a lease later. A request a rate limit rejects gives its
slots back at once, so a rejected request holds nothing (all-or-nothing, as rate limits).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar, cast

import structlog

from ratelimitd.app import build
from ratelimitd.app.settings import Settings
from ratelimitd.config.loader import load_config
from ratelimitd.core import authz, extract, headers, problem
from ratelimitd.core.engine import Engine
from ratelimitd.core.plan import Plan
from ratelimitd.core.problem import BodyMode
from ratelimitd.model.messages import Code, Descriptor, HttpAttributes, Request, Result, Status
from ratelimitd.model.rules import FailureMode
from ratelimitd.storage.base import SlotStore, StoreError
from ratelimitd.transports.plan_cache import PlanCache

log = structlog.get_logger(__name__)

T = TypeVar("T")

# A descriptor as the application may give it: `{"user": "42"}`, `[("user", "42")]`, a lone
# entry `("user", "42")`, or a Descriptor (which may carry its own cost, hits_addend).
DescriptorLike = Descriptor | Mapping[str, str] | Sequence[tuple[str, str]] | tuple[str, str]

DEFAULT_LEASE_S = 30.0
# A slot frees when some request ends, which no one can foresee: ask again in a second.
SLOT_RETRY_US = 1_000_000


class Lease:
    """The slots one request holds, renewed every third of a lease until released."""

    def __init__(self, store: SlotStore, keys: Sequence[str], holder: str, lease_us: int) -> None:
        self._store = store
        self._keys = tuple(keys)
        self._holder = holder
        self._lease_us = lease_us
        self._released = False
        self._renewing = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self._lease_us / 3_000_000)
            try:
                await self._store.renew_slots(self._keys, self._holder, self._lease_us)
            except StoreError as exc:
                # The lease still runs; the next renewal may get through.
                log.warning("slot_renewal_failed", error=str(exc))

    async def release(self) -> None:
        """Give the slots back (once; later calls do nothing). A failed release is logged:
        the slots come back when their lease ends."""
        if self._released:
            return
        self._released = True
        self._renewing.cancel()
        try:
            await self._store.release_slots(self._keys, self._holder)
        except StoreError as exc:
            log.warning("slot_release_failed", error=str(exc))


class Admission(NamedTuple):
    """The answer to one request. `status` is 0 when admitted (the request goes on, its
    response gets `headers`), else the status of the answer to send instead (429 or 503)
    with `headers` and `body`. `lease` holds the request's concurrency slots, if any."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    lease: Lease | None = None

    @property
    def admitted(self) -> bool:
        """True when the request may go on."""
        return self.status == 0

    async def end(self) -> None:
        """The request is over: give its slots back."""
        if self.lease is not None:
            await self.lease.release()


ADMITTED = Admission(0)
# Looked up once: naming an enum member costs a descriptor call on its class each time.
_OK = authz.Verdict.OK


def descriptor_of(spec: DescriptorLike) -> Descriptor:
    """A Descriptor from what the application gave."""
    if isinstance(spec, Descriptor):
        return spec
    if isinstance(spec, Mapping):
        return Descriptor(tuple((str(key), str(value)) for key, value in spec.items()))
    if len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], str):
        return Descriptor(((spec[0], spec[1]),))
    entries = cast(Sequence[tuple[str, str]], spec)
    return Descriptor(tuple((str(key), str(value)) for key, value in entries))


class Limiter:
    """One domain of a config, enforced in the application on `engine` (and its store).

    `lease_s` is how long a concurrency slot outlives a worker that died holding it (renewed
    every third of it while the request runs); `body_mode` the body of 429s the limiter
    writes itself (concurrency rejections: the engine writes the others, as configured).
    """

    def __init__(
        self,
        engine: Engine,
        domain: str,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        body_mode: BodyMode = BodyMode.PROBLEM_JSON,
    ) -> None:
        found = engine.config.domains.get(domain)
        if found is None:
            known = ", ".join(sorted(engine.config.domains)) or "none"
            raise ValueError(f"domain {domain!r} is not in the config (domains: {known})")
        if lease_s <= 0:
            raise ValueError("lease_s must be positive")
        slots = any(rule.concurrency is not None for rule in engine.config.rules)
        if slots and not hasattr(engine.store, "take_slots"):
            raise ValueError(
                f"{type(engine.store).__name__} keeps no concurrency slots (concurrency limits "
                "need the memory store or one Redis server)"
            )
        self.engine = engine
        self.domain = domain
        # Requests repeat (a tenant, a user): matching and key building happen once per shape.
        self._plans = PlanCache(engine)
        self._lease_us = round(lease_s * 1_000_000)
        self._body_mode = body_mode
        self._thread: _LoopThread | None = None
        self._thread_lock = threading.Lock()

    @classmethod
    def from_config(
        cls,
        config: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        domain: str,
        redis_url: str | None = None,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        **settings: Any,
    ) -> Limiter:
        """A limiter for `domain` of the config files (or directories) `config`, on the store
        `redis_url` names (redis://, rediss://, redis+sentinel://, redis+cluster://) or in
        memory. `settings` are `ratelimitd serve`'s, by their Settings names
        (`response_headers=HeaderMode.IETF`, `key_prefix=...`, `redis_timeout=...`); 429s carry
        the problem+json body unless `over_limit_body=BodyMode.NONE`.

        Raises InvalidConfigError (each error at its file:line) for a bad config, ValueError
        for a bad URL or an unknown domain."""
        paths = (config,) if isinstance(config, str | os.PathLike) else tuple(config)
        settings.setdefault("over_limit_body", BodyMode.PROBLEM_JSON)
        options = Settings(config=tuple(str(p) for p in paths), redis_url=redis_url, **settings)
        loaded = load_config(options.config, build.defaults(options))
        store = build.build_store(options)
        engine = build.build_engine(options, loaded, store)
        return cls(engine, domain, lease_s=lease_s, body_mode=options.over_limit_body)

    def request(self, descriptors: Iterable[DescriptorLike], cost: int = 0) -> Request | None:
        """The request of the application's own descriptors (each costing `cost`, 0 meaning
        1, unless it carries its own); None when there are none."""
        found = tuple(descriptor_of(spec) for spec in descriptors)
        return Request(self.domain, found, cost) if found else None

    def request_from_http(self, attributes: HttpAttributes) -> Request | None:
        """The request the domain's `extract:` rules build from an HTTP request, as the
        ext_authz door builds it; None when they build no descriptor."""
        found = extract.descriptors(self.engine.config.domains[self.domain], attributes)
        return Request(self.domain, found) if found else None

    async def admit(self, request: Request | None) -> Admission:
        """Decide `request` (None: nothing to limit). Raises InvalidRequestError for
        descriptors the engine cannot take (an empty key, values past the bounds)."""
        if request is None:
            return ADMITTED
        plan = self._plans.for_request(request)
        lease = None
        if plan.slots:
            taken = await self._take(plan)
            if isinstance(taken, Admission):
                return taken
            lease = taken
        try:
            answer = await authz.answer(self.engine, plan)
        except BaseException:  # cancelled (the client went away), or a bug: keep no slot
            if lease is not None:
                await lease.release()
            raise
        if answer.verdict is not _OK:
            if lease is not None:
                await lease.release()
            return Admission(answer.http_status, answer.headers, answer.body)
        return Admission(0, answer.headers, lease=lease)

    async def _take(self, plan: Plan) -> Lease | Admission | None:
        """The request's slots, or the answer when it gets none: a rejection, or the failure
        modes' answer when the store failed (None: admitted without slots)."""
        store = cast(SlotStore, self.engine.store)
        claims = [claim for _, _, claim in plan.slots]
        holder = uuid.uuid4().hex
        try:
            taken = await store.take_slots(claims, holder, self._lease_us)
        except StoreError as exc:
            log.warning("slot_take_failed", error=str(exc))
            return self._failed(plan)
        if taken.admitted:
            return Lease(store, [claim.key for claim in claims], holder, self._lease_us)
        full = [
            Status(Code.OVER_LIMIT, rule, 0, SLOT_RETRY_US, Result.OVER_LIMIT)
            for (_, rule, claim), in_flight in zip(plan.slots, taken.in_flight, strict=True)
            if in_flight >= claim.capacity
        ]
        return self._rejection(full)

    def _failed(self, plan: Plan) -> Admission | None:
        modes = {rule.failure_mode for _, rule, _ in plan.slots}
        if FailureMode.UNAVAILABLE in modes:
            return Admission(503)
        denied = [
            Status(Code.OVER_LIMIT, rule, 0, SLOT_RETRY_US, Result.FAILURE_DENIED)
            for _, rule, _ in plan.slots
            if rule.failure_mode is FailureMode.DENY
        ]
        return self._rejection(denied) if denied else None

    def _rejection(self, statuses: Sequence[Status]) -> Admission:
        """The 429 of exceeded concurrency limits: Retry-After and, as configured, the
        problem+json body (a slot has no rate to put in rate limit headers)."""
        retry_s = headers.retry_after_s(statuses)
        fields: tuple[tuple[str, str], ...] = (("Retry-After", str(retry_s)),)
        if self._body_mode is BodyMode.NONE:
            return Admission(429, fields)
        fields += (("Content-Type", problem.CONTENT_TYPE),)
        return Admission(429, fields, problem.problem_json(statuses, retry_s))

    # -- for synchronous callers (WSGI) -------------------------------------------------------

    def run(self, call: Coroutine[Any, Any, T]) -> T:
        """Run one of the limiter's coroutines from synchronous code, on the limiter's own
        event loop thread (started on first use): the store, its connection and batching,
        and the slots' renewals all live on that loop."""
        with self._thread_lock:
            if self._thread is None:
                self._thread = _LoopThread()
        return self._thread.run(call)

    async def close(self) -> None:
        """Close the store's connections."""
        await self.engine.store.close()

    def close_sync(self) -> None:
        """close() from synchronous code; also stops the limiter's loop thread."""
        if self._thread is None:
            asyncio.run(self.close())
            return
        self._thread.run(self.close())
        self._thread.stop()


class _LoopThread:
    """An event loop on a daemon thread of its own."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="ratelimitd-limiter", daemon=True
        )
        self._thread.start()

    def run(self, call: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(call, self._loop).result()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        with contextlib.suppress(RuntimeError):
            self._loop.close()
