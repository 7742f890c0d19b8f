"""Coalesce store calls: every request submitted during one event-loop tick is sent in one
go, so under load one Redis round trip serves many decisions.

The flush is scheduled with call_soon, on the same tick as the first submission: an idle
server adds no latency, and there are no timers. While MAX_IN_FLIGHT batches await their
answer, new requests keep gathering and go as one batch when an answer comes back: the
busier the server, the bigger the batches, and the fewer round trips (each costs a write, a
wakeup of Redis and a read, whatever its size). Every request of a batch waits on the same
future (one per batch, not one per request), which a waiter's cancellation cannot cancel:
a request whose client went away is cancelled once its batch is back, the others are
unaffected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ratelimitd.algorithms import Hit, Outcome
from ratelimitd.model.observer import Observer
from ratelimitd.storage.base import StoreError

Send = Callable[[list[Sequence[Hit]]], Awaitable[list[list[Outcome]]]]
# Batches sent and not yet answered, at most; a request waits at most for one answer more.
MAX_IN_FLIGHT = 1
# A batch's answer: one outcome list per request, or the exception that failed them all.
Answer = list[list[Outcome]] | BaseException


class BatchFuture(asyncio.Future[Answer]):
    """The future all requests of one batch wait on. A task cancelled while waiting would
    cancel the future it waits on, and so every other request of the batch: refusing makes
    asyncio deliver the cancellation to that task alone, once the batch is answered."""

    def cancel(self, msg: Any | None = None) -> bool:
        """Refuse: see the class docstring."""
        return False


class TickBatcher:
    """Gathers `submit` calls of one loop iteration and passes them to `send` together."""

    def __init__(
        self, send: Send, max_batch: int = 256, max_in_flight: int = MAX_IN_FLIGHT
    ) -> None:
        self._send = send
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._pending: list[Sequence[Hit]] = []
        self._future: BatchFuture | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self.batches = 0  # batches sent so far, for bench/ and metrics

    async def submit(self, hits: Sequence[Hit]) -> list[Outcome]:
        """Queue one request's hits; resolves with its outcomes once its batch returns."""
        pending = self._pending
        future = self._future
        if future is None:
            loop = asyncio.get_running_loop()
            future = self._future = BatchFuture(loop=loop)
            if len(self._in_flight) < self._max_in_flight:
                loop.call_soon(self._flush)  # else sent when an answer comes back
        index = len(pending)
        pending.append(hits)
        if index + 1 >= self._max_batch:
            self._flush()
        answer = await future
        if isinstance(answer, StoreError):
            raise StoreError(str(answer)) from answer  # one of its own for each request
        if isinstance(answer, BaseException):
            raise answer
        return answer[index]

    def _flush(self) -> None:
        future = self._future
        if future is None:  # already sent, because the batch was full
            return
        batch, self._pending, self._future = self._pending, [], None
        task = asyncio.ensure_future(self._deliver(batch, future))
        self._in_flight.add(task)
        task.add_done_callback(self._answered)

    def _answered(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._flush()  # what gathered meanwhile

    async def _deliver(self, batch: list[Sequence[Hit]], future: BatchFuture) -> None:
        self.batches += 1
        try:
            answer: Answer = await self._send(batch)
        except Exception as exc:  # every waiter gets the failure, whatever it is
            answer = exc
        future.set_result(answer)


def observed(send: Send, observer: Observer) -> Send:
    """`send`, reporting each round trip (its time, its requests, its error) to `observer`."""

    async def send_observed(requests: list[Sequence[Hit]]) -> list[list[Outcome]]:
        started = time.perf_counter()
        try:
            answer = await send(requests)
        except Exception as exc:
            observer.store_call(time.perf_counter() - started, len(requests), exc.__cause__ or exc)
            raise
        observer.store_call(time.perf_counter() - started, len(requests), None)
        return answer

    return send_observed
