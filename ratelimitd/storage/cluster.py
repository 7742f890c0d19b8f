"""Redis Cluster store: counters spread over the cluster's primaries by hash slot, evaluated
by the same scripts as on a single Redis, one script call per slot.

Requests submitted in one event-loop tick are batched. Each request's hits are grouped by
hash slot, and each slot gets one request-script call evaluating the batch's parts in it, in
request order. All calls go out in one pipeline: one write per node, all nodes at once.

- A request whose keys share one slot (the usual case: keys carry the domain and first
  descriptor entry as hash tag) is atomic and all-or-nothing, as on a single Redis.
- A request spanning slots is evaluated and committed per slot, each part all-or-nothing in
  its slot. If any part is rejected, the parts admitted in other slots are refunded (one
  lua/refund.lua call per slot, in a second pipeline), so the request consumes nothing. Its
  outcomes are what a single Redis reports for a rejected request: each hit's own verdict,
  and the remaining and reset of the counter as it was before the request. Those are read
  by a zero-cost shadow copy of each part, evaluated just before the part in the same
  script call, so they are exact.
- Until the refund lands (one round trip later), the refunded cost counts against its
  counters: a request evaluated in between, including a later one of the same batch, sees
  less capacity than a single Redis would show it, so under contention cross-slot
  rejections can cause extra rejections. Refunds are the algorithms' inverses (lua/),
  exact for the windows; a token bucket's or GCRA's gives up to the refunded cost back early
  if, within that round trip, the counter filled up (bucket) or went idle (GCRA) and other
  requests used it. A refunded token bucket is re-based at the evaluation time, so a later
  answer can round 1 us differently.
- A quota hit (algorithms.request) rejects only together with every quota hit of its
  request, which one slot cannot know: in a request spanning slots, quota hits go to their
  slots as shadow hits (they reject no part), and the request's rejection is decided here,
  refunding its parts like any other.
- peek() (explain) sends the same calls as a dry run: nothing is written, so nothing needs a
  refund, and a request spanning slots gets the answer a single Redis would give it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from ratelimitd.algorithms import Hit, Outcome, keeps_charge, probes, rejects, settle
from ratelimitd.model.observer import NO_OBSERVER, Observer
from ratelimitd.storage.base import StoreError
from ratelimitd.storage.breaker import CircuitBreaker
from ratelimitd.storage.clock import Clock
from ratelimitd.storage.redis import ScriptRunner, decode
from ratelimitd.storage.round_trips import RoundTripStore

_ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)

# Where a request's part went: its slot, its position in that slot's script call, and the
# indices of its hits in the request.
Placement = tuple[int, int, list[int]]


class ClusterStore(RoundTripStore):
    """Counters in a Redis Cluster (see the module docstring for the semantics).

    `clock` exists for tests only: it replaces Redis TIME as the scripts' notion of now.
    """

    def __init__(
        self,
        nodes: Sequence[tuple[str, int]],
        *,
        timeout: float = 0.05,
        username: str | None = None,
        password: str | None = None,
        clock: Clock | None = None,
        observer: Observer = NO_OBSERVER,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        super().__init__(batch=True, observer=observer, breaker=breaker)
        self._client = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            username=username,
            password=password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # Fail fast and let the rules' failure modes answer: redis-py's own retries
            # sleep a quarter of a second between attempts, far beyond any sensible timeout.
            retry=Retry(NoBackoff(), 0),
        )
        self._scripts = ScriptRunner(clock)
        # Pipelines sent: one per batch, one more for its refunds, one more after a node
        # lost the scripts.
        self.round_trips = 0

    async def _send(
        self, requests: list[Sequence[Hit]], dry_run: bool = False
    ) -> list[list[Outcome]]:
        calls: dict[int, list[Sequence[Hit]]] = {}  # slot -> the parts its script evaluates
        placements = [_place(hits, calls) for hits in requests]
        slots = list(calls)
        replies = await self._evalsha(
            [self._scripts.request_call(calls[s], dry_run) for s in slots]
        )
        decoded = {s: decode(calls[s], reply) for s, reply in zip(slots, replies, strict=True)}
        refunds: dict[int, list[tuple[Hit, int]]] = {}
        results = [
            _settle(hits, placed, decoded, refunds)
            for hits, placed in zip(requests, placements, strict=True)
        ]
        if refunds and not dry_run:  # a dry run committed nothing to give back
            await self._evalsha([self._scripts.refund_call(r) for r in refunds.values()])
        return results

    async def _evalsha(self, calls: list[list[Any]]) -> list[Any]:
        """Run script calls, each within one slot, in one pipeline; their replies in order."""
        replies = await self._pipeline(calls)
        lost = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if lost:
            # A node restarted, failed over or flushed its script cache. A failed call did
            # nothing, so load the scripts on every primary and send those calls again.
            await self._load_scripts()
            for i, reply in zip(lost, await self._pipeline([calls[i] for i in lost]), strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise _store_error(reply) from reply
        return replies

    async def _pipeline(self, calls: list[list[Any]]) -> list[Any]:
        self.round_trips += 1
        pipe = self._client.pipeline()
        for call in calls:
            pipe.execute_command("EVALSHA", *call)
        try:
            return await pipe.execute(raise_on_error=False)
        except _ERRORS as exc:
            if isinstance(exc, RedisCluster.ERRORS_ALLOW_RETRY):
                # A node is unreachable or the cluster changed: forget the slot map, so the
                # next call asks the cluster again (what redis-py's own retry would do).
                await self._client.aclose()
            raise _store_error(exc) from exc

    async def _load_scripts(self) -> None:
        scripts = (self._scripts.request, self._scripts.refund)
        try:
            # SCRIPT LOAD goes to every primary.
            await asyncio.gather(*(self._client.script_load(s.source) for s in scripts))
        except _ERRORS as exc:
            raise _store_error(exc) from exc

    async def ping(self) -> bool:
        """True when every primary answers PING within the timeout."""
        try:
            return bool(
                await self._client.execute_command("PING", target_nodes=RedisCluster.PRIMARIES)
            )
        except _ERRORS:
            return False

    async def close(self) -> None:
        """Close every node's connections."""
        await self._client.aclose()


def _place(hits: Sequence[Hit], calls: dict[int, list[Sequence[Hit]]]) -> list[Placement]:
    """Append the parts of one request to the script calls of their slots."""
    by_slot: dict[int, list[int]] = {}
    for i, hit in enumerate(hits):
        by_slot.setdefault(key_slot(hit.key.encode()), []).append(i)
    if len(by_slot) == 1:
        slot = next(iter(by_slot))
        parts = calls.setdefault(slot, [])
        parts.append(hits)
        return [(slot, len(parts) - 1, by_slot[slot])]
    placed = []
    for slot, indices in by_slot.items():
        parts = calls.setdefault(slot, [])
        part = _part(hits, indices)
        # Just before the part, its probes read the counters as the part finds them: what
        # the request reports if another part rejects it.
        parts.append(probes(part))
        parts.append(part)
        placed.append((slot, len(parts) - 1, indices))
    return placed


def _settle(
    hits: Sequence[Hit],
    placed: list[Placement],
    decoded: dict[int, list[list[Outcome]]],
    refunds: dict[int, list[tuple[Hit, int]]],
) -> list[Outcome]:
    """The request's outcomes from its parts' replies (algorithms.request.settle, as a single
    Redis answers); adds what to give back to `refunds`."""
    if len(placed) == 1:
        slot, at, _ = placed[0]
        return decoded[slot][at]
    evaluated: dict[int, Outcome] = {}  # hit index -> its outcome in its part
    peeked: dict[int, Outcome] = {}  # hit index -> its probe's outcome
    for slot, at, indices in placed:
        for i, outcome, peek in zip(indices, decoded[slot][at], decoded[slot][at - 1], strict=True):
            evaluated[i], peeked[i] = outcome, peek
    # A part rejected in its slot is settled already, and settles to itself again.
    outcomes, rejected = settle(hits, [evaluated[i] for i in range(len(hits))], peeked.__getitem__)
    if rejected:
        for slot, _, indices in placed:
            if rejects(_part(hits, indices), [evaluated[i] for i in indices]):
                continue  # its slot committed only the charges a rejected request keeps
            for i in indices:
                hit = hits[i]
                if evaluated[i].admitted and hit.cost > 0 and not keeps_charge(hit, rejected):
                    refunds.setdefault(slot, []).append((hit, evaluated[i].reset_us))
    return outcomes


def _part(hits: Sequence[Hit], indices: list[int]) -> list[Hit]:
    """The hits of one slot's part of a request spanning slots, as its script gets them:
    quota hits as shadow ones, since whether they reject depends on the other slots too."""
    return [hits[i]._replace(shadow=True) if hits[i].quota else hits[i] for i in indices]


def _store_error(exc: BaseException) -> StoreError:
    return StoreError(f"redis cluster: {exc.__class__.__name__}: {exc}")
