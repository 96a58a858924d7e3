"""Calls gathered into batches: one task writes whatever callers submitted while the previous
batch was being written, so that they share its round trips and its commit.

Nothing waits for company: a call submitted while no batch is in flight is written on the
event loop's next turn, with whatever other calls that turn submitted. Each caller gets its
own result or its own exception. A caller that gives up (is cancelled) before its call is
taken into a batch is not written; once taken, it is written whatever the caller does.

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
    """Runs `write` on batches of at most `max_batch` submitted items, one batch at a time.

    `write` returns one result or exception per item, in the items' order; an exception it
    raises is every item's.
    """

    def __init__(
        self,
        write: Callable[[Sequence[Item]], Awaitable[Sequence[Result | Exception]]],
        *,
        max_batch: int,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._queue: deque[_Queued[Item, Result]] = deque()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        """Write `item` in the next batch; its result, or its exception raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._queue.append((item, current_deadline(), future))
        if self._task is None:
            self._task = loop.create_task(self._run(), context=contextvars.Context())
        return await future

    async def drain(self) -> None:
        """Wait until every item submitted so far is written (or failed)."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        """Write batches until nothing is queued."""
        try:
            while self._queue:
                batch = self._next_batch()
                if batch:
                    await self._write_batch(batch)
        except asyncio.CancelledError:
            for _, _, future in self._queue:
                future.cancel()
            raise
        finally:
            self._task = None

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
