"""Calls gathered into batches: one task writes whatever callers submitted while the previous
batch was being written, so that they share its round trips and its commit.

Nothing waits for company: a call submitted while no batch is in flight is written on the
event loop's next turn, with whatever other calls that turn submitted; calls submitted while
one is in flight go in the next (or, if the one in flight is stalled, in another written
beside it). Each caller gets its own result or its own exception. A caller that gives up (is
cancelled) before its call is taken into a batch is not written; once taken, it is written
whatever the caller does.

The batch runs in a context of its own, outside any caller's (their tracing spans and call
deadlines), with the latest deadline of the callers it holds: the store caps its waits with
that deadline, as it would for the caller alone (stores/deadline.py).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from policy_service.stores.deadline import current_deadline, deadline_at

Item = TypeVar("Item")
Result = TypeVar("Result")
# A submitted item, its caller's deadline (time.monotonic(); None: none) and its future.
_Queued = tuple[Item, float | None, "asyncio.Future[Result]"]


class Batcher(Generic[Item, Result]):
    """Runs `write` on batches of at most `max_batch` submitted items, one batch at a time
    unless the batch in flight is slow.

    `write` returns one result or exception per item, in the items' order; an exception it
    raises is every item's. A batch that has been in flight for `stall_s` (one waiting for a
    lock that another process holds long, say) makes room for another, up to `max_lanes`
    batches at a time: a stalled batch holds up only itself, unless max_lanes of them are.
    """

    def __init__(
        self,
        write: Callable[[Sequence[Item]], Awaitable[Sequence[Result | Exception]]],
        *,
        max_batch: int,
        max_lanes: int,
        stall_s: float,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._max_lanes = max_lanes
        self._stall_s = stall_s
        self._queue: deque[_Queued[Item, Result]] = deque()
        self._lanes: set[asyncio.Task[None]] = set()
        self._stalled = 0  # lanes whose batch has been in flight for stall_s or longer

    async def submit(self, item: Item) -> Result:
        """Write `item` in the next batch; its result, or its exception raised."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, current_deadline(), future))
        if len(self._lanes) == self._stalled < self._max_lanes:
            self._start_lane()  # none, or every one stalled
        return await future

    async def drain(self) -> None:
        """Wait until every item submitted so far is written (or failed)."""
        while self._lanes:
            await asyncio.wait(set(self._lanes))

    def _start_lane(self) -> None:
        """Start a task writing batches, outside any caller's context (it runs on the loop's
        next turn, so that the batch it takes holds every call submitted in this one)."""
        loop = asyncio.get_running_loop()
        self._lanes.add(loop.create_task(self._run(), context=contextvars.Context()))

    def _stall(self, stalled: list[bool]) -> None:
        """A batch has been in flight for stall_s: another lane for what is queued (or, if
        nothing is, for the next call submitted)."""
        stalled.append(True)
        self._stalled += 1
        if self._queue and len(self._lanes) < self._max_lanes:
            self._start_lane()

    async def _run(self) -> None:
        """Write batches until nothing is queued."""
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch = self._next_batch()
                if batch:
                    stalled: list[bool] = []
                    timer = loop.call_later(self._stall_s, self._stall, stalled)
                    try:
                        await self._write_batch(batch)
                    finally:
                        timer.cancel()
                        self._stalled -= len(stalled)
        except asyncio.CancelledError:
            for _, _, future in self._queue:
                future.cancel()
            raise
        finally:
            # Now, not in a done callback: a call submitted before that ran would find this
            # lane still counted, and wait for it in vain.
            self._lanes.discard(asyncio.current_task())

    def _next_batch(self) -> list[_Queued[Item, Result]]:
        """Up to max_batch queued items whose callers still wait."""
        batch: list[_Queued[Item, Result]] = []
        while self._queue and len(batch) < self._max_batch:
            queued = self._queue.popleft()
            if not queued[2].done():
                batch.append(queued)
        return batch

    async def _write_batch(self, batch: list[_Queued[Item, Result]]) -> None:
        """Write one batch and settle its callers' futures."""
        deadlines = [deadline for _, deadline, _ in batch]
        latest = None if None in deadlines else max(d for d in deadlines if d is not None)
        try:
            with deadline_at(latest):
                results = await self._write([item for item, _, _ in batch])
        except asyncio.CancelledError:
            for _, _, future in batch:
                future.cancel()
            raise
        except Exception as error:  # every item's, as documented
            results = [error] * len(batch)
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
