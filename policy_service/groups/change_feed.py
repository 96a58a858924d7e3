"""The change feed: reads the store's change log once per process and serves every watcher.

One task on the service's event loop follows the log (woken by the store: in-process for
SQLite, LISTEN/NOTIFY for PostgreSQL, so changes made through any replica arrive) and keeps the
newest changes in memory. A watcher (an async generator: it holds no thread while it waits)
reads from that memory once it has caught up, and from the store while it resumes from further
back, so 1,000 watchers cost one reader, and a slow watcher only delays itself. With no watcher
the task only takes the store's wake-ups (so that PostgreSQL's notifications do not pile up) and
reads nothing; the first watcher to come makes it start again from the log's head.

Everything here runs on the one event loop: no lock is needed, and a waiting watcher is an
event wait, woken when the reader appends changes or the feed closes.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from policy_service.errors import (
    ChangeLogExpired,
    SequenceAhead,
    ShuttingDown,
    StoreUnavailable,
)
from policy_service.groups.change_log import StateChange
from policy_service.groups.store import GroupStateStore

log = logging.getLogger(__name__)

# Changes read per store query, and sent per message at most.
BATCH = 500
# Changes kept in memory: a watcher further behind reads from the store.
MEMORY = 20_000
# Longest wait for the store's wake-up before reading the log anyway (a missed NOTIFY, say).
POLL_S = 1.0
# Pause after a failed read of the log, doubling up to the maximum.
RETRY_S, MAX_RETRY_S = 0.2, 5.0
# Above every sequence: memory covers nothing yet.
_NOT_YET = 2**63


@dataclass(frozen=True)
class WatchBatch:
    """What a watcher sends next: matching changes (or none: progress) and its position."""

    changes: list[StateChange]
    sequence: int


class ChangeFeed:
    """Follows the change log in a task and hands its changes to watchers.

    start(), close() and watch() are called on the event loop the store belongs to.
    """

    def __init__(self, store: GroupStateStore) -> None:
        self._store = store
        self._closed = False
        self._head = 0
        # Every change with a sequence in (_memory_from, _head], oldest first. Until the
        # reader has read the log's head, memory covers nothing: watchers read the store.
        self._memory: list[StateChange] = []
        self._memory_from = _NOT_YET
        self._watchers = 0
        # Set (and replaced by a fresh one) whenever _head moves or the feed closes.
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start following the log from its head (read by the task, retried until it can)."""
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="change-feed")

    def close(self) -> None:
        """Stop following; every watcher ends with ShuttingDown (at its next step)."""
        self._closed = True
        self._notify()
        if self._task is not None:
            self._task.cancel()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def watch(
        self, after_sequence: int | None, sdk_app_id: int, heartbeat_s: float
    ) -> AsyncGenerator[WatchBatch, None]:
        """The batches of one watch stream, until the feed closes (or the consumer stops).

        after_sequence None starts from now. Raises ChangeLogExpired or SequenceAhead when
        the log cannot resume after after_sequence, ShuttingDown when the feed closes.
        """
        self._watchers += 1
        try:
            batches = self._batches(after_sequence, sdk_app_id, heartbeat_s)
            async with contextlib.aclosing(batches):
                async for batch in batches:
                    yield batch
        finally:
            self._watchers -= 1

    async def _batches(
        self, after_sequence: int | None, sdk_app_id: int, heartbeat_s: float
    ) -> AsyncGenerator[WatchBatch, None]:
        """watch(), for a watcher that is counted."""
        if self._closed:
            raise ShuttingDown("the policy service is stopping")
        bounds = await self._store.change_log_bounds()
        if after_sequence is None:
            after_sequence = bounds.head
        if after_sequence > bounds.head:
            raise SequenceAhead(after_sequence, bounds.head)
        if after_sequence < bounds.pruned_through:
            raise ChangeLogExpired(after_sequence, bounds.pruned_through)
        cursor = after_sequence
        # The stream has caught up once it reaches the head the log had when it started.
        caught_up_at = bounds.head
        caught_up = False
        last_sent = time.monotonic()
        while True:
            changes = await self._read(cursor, caught_up_at)
            if changes:
                cursor = changes[-1].sequence
                matching = [c for c in changes if sdk_app_id in (0, c.state.key.sdk_app_id)]
                if matching:
                    yield WatchBatch(matching, cursor)
                    last_sent = time.monotonic()
                    continue
            elif not caught_up:
                caught_up = True
                yield WatchBatch([], cursor)
                last_sent = time.monotonic()
                continue
            if not caught_up:
                continue
            # Caught up: a progress message when idle (or only skipping other apps' changes).
            remaining = last_sent + heartbeat_s - time.monotonic()
            if remaining <= 0:
                yield WatchBatch([], cursor)
                last_sent = time.monotonic()
            elif not changes:
                await self._wait_beyond(cursor, remaining)

    async def _wait_beyond(self, cursor: int, timeout_s: float) -> None:
        """Wait until the feed has a change after `cursor` or closes, at most timeout_s."""
        if self._closed or self._head > cursor:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)

    async def _read(self, cursor: int, known_head: int) -> list[StateChange]:
        """The next changes after `cursor`: from memory when it covers them, else the store.

        Memory covers them when it starts at or before `cursor` and, if it has nothing after
        it, has read at least up to `known_head`, a head the caller saw in the store (the
        reader may lag the store by a wake-up).
        """
        if self._closed:
            raise ShuttingDown("the policy service is stopping")
        if cursor >= self._memory_from:
            start = bisect.bisect_right(self._memory, cursor, key=lambda c: c.sequence)
            changes = self._memory[start : start + BATCH]
            if changes or self._head >= known_head:
                return changes
        changes = await self._store.changes_after(cursor, BATCH)
        # Read after the changes: a prune that raced the read shows here.
        pruned_through = (await self._store.change_log_bounds()).pruned_through
        if cursor < pruned_through:
            raise ChangeLogExpired(cursor, pruned_through)
        return changes

    async def _follow(self) -> None:
        """The reader task: append new changes to memory and wake the watchers."""
        retry_s = RETRY_S
        while not self._closed:
            try:
                if not self._watchers:
                    self._forget()
                    await self._store.wait_for_changes(POLL_S)
                    continue
                if self._memory_from == _NOT_YET:
                    await self._begin()
                changes = await self._store.changes_after(self._head, BATCH)
                if not changes:
                    await self._store.wait_for_changes(POLL_S)
            except asyncio.CancelledError:
                return
            except Exception as error:
                if self._closed:
                    return
                if retry_s == RETRY_S:  # the first failure of an outage
                    if isinstance(error, StoreUnavailable):
                        log.warning("change feed cannot read the change log, retrying: %s", error)
                    else:
                        log.exception("change feed failed unexpectedly, retrying")
                try:
                    await asyncio.sleep(retry_s)
                except asyncio.CancelledError:
                    return
                retry_s = min(retry_s * 2, MAX_RETRY_S)
                continue
            if retry_s != RETRY_S:
                log.info("change feed reads the change log again")
                retry_s = RETRY_S
            if changes:
                self._remember(changes)

    async def _begin(self) -> None:
        """Subscribe to the store's wake-ups, then start from the log's head."""
        # Subscribing first: a commit after it wakes the reader, one before it is read.
        await self._store.wait_for_changes(0)
        head = (await self._store.change_log_bounds()).head
        self._head = self._memory_from = head
        # Watchers that came while the reader was idle may be waiting for this head.
        self._notify()

    def _forget(self) -> None:
        """No watcher: drop memory, so the next watcher's reader starts from the head."""
        self._memory_from = _NOT_YET
        self._memory = []

    def _remember(self, changes: list[StateChange]) -> None:
        """Append changes read from the log, forget the oldest beyond MEMORY, wake watchers."""
        self._memory.extend(changes)
        self._head = changes[-1].sequence
        if len(self._memory) > 2 * MEMORY:
            dropped = len(self._memory) - MEMORY
            self._memory_from = self._memory[dropped - 1].sequence
            del self._memory[:dropped]
        self._notify()
