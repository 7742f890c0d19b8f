"""Coalesce store calls: every request submitted during one event-loop tick is sent in one
go, so under load one Redis round trip serves many decisions.

The flush is scheduled with call_soon, on the same tick as the first submission: an idle
server adds no latency, and there are no timers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from ratelimitd import metrics
from ratelimitd.algorithms import Hit, Outcome

Send = Callable[[list[Sequence[Hit]]], Awaitable[list[list[Outcome]]]]


class TickBatcher:
    """Gathers `submit` calls of one loop iteration and passes them to `send` together."""

    def __init__(self, send: Send, max_batch: int = 256) -> None:
        self._send = send
        self._max_batch = max_batch
        self._pending: list[tuple[Sequence[Hit], asyncio.Future[list[Outcome]]]] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self.batches = 0  # batches sent so far, for bench/ and metrics

    async def submit(self, hits: Sequence[Hit]) -> list[Outcome]:
        """Queue one request's hits; resolves with its outcomes once its batch returns."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Outcome]] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((hits, future))
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self._max_batch):
            task = asyncio.ensure_future(self._deliver(pending[start : start + self._max_batch]))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _deliver(
        self, batch: list[tuple[Sequence[Hit], asyncio.Future[list[Outcome]]]]
    ) -> None:
        self.batches += 1
        started = time.perf_counter()
        try:
            results = await self._send([hits for hits, _ in batch])
        except Exception as exc:  # every waiter gets the failure, whatever it is
            metrics.store_call(time.perf_counter() - started, len(batch), exc.__cause__ or exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        metrics.store_call(time.perf_counter() - started, len(batch), None)
        for (_, future), outcomes in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(outcomes)
