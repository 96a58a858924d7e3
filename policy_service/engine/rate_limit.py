"""Sliding-window creation counters: the interface rate-limit rules count through.

A bucket names one counted subject (rule, application and operator or owner); each allowed
creation takes a slot stamped with its time. A slot counts against the limit while it is
younger than the window, so the window slides with the clock rather than resetting.
"""

from __future__ import annotations

import itertools
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Acquisition:
    """The answer to one acquire: how many slots the window already held, and the new slot."""

    count_before: int
    within_limit: bool
    slot: int | None


class RateCounter(Protocol):
    """Counts creations per bucket in a sliding window; shared by replicas when the store is.

    Methods are coroutines on the store's event loop and raise StoreUnavailable when the store
    fails; calls may overlap.
    """

    async def acquire(
        self, bucket: str, *, window_ms: int, limit: int, now_ms: int, force: bool = False
    ) -> Acquisition:
        """Atomically count the bucket's slots stamped after now_ms - window_ms and, when
        fewer than limit (or when force is set), take a slot stamped now_ms.

        Two callers racing on one bucket (threads or replicas) never both see the same count:
        with limit N, at most N slots are taken in any window unless forced.
        """
        ...

    async def count_slots(self, bucket: str, *, window_ms: int, now_ms: int) -> int:
        """How many of the bucket's slots are stamped after now_ms - window_ms; takes none
        (a dry run asks what acquire would answer)."""
        ...

    async def release(self, slot: int) -> None:
        """Give back a slot taken by acquire (the creation was refused after all)."""
        ...

    async def prune_slots(self, before_ms: int) -> int:
        """Delete slots stamped before before_ms; returns how many were deleted."""
        ...


class InMemoryRateCounter:
    """A RateCounter in this process only: for `chat-policy policy test` and benchmarks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[str, dict[int, int]] = defaultdict(dict)
        self._bucket_of: dict[int, str] = {}
        self._ids = itertools.count(1)

    async def acquire(
        self, bucket: str, *, window_ms: int, limit: int, now_ms: int, force: bool = False
    ) -> Acquisition:
        """See RateCounter.acquire."""
        with self._lock:
            count = self._count(bucket, now_ms - window_ms)
            within = count < limit
            if not (within or force):
                return Acquisition(count, within, None)
            slot = next(self._ids)
            self._slots[bucket][slot] = now_ms
            self._bucket_of[slot] = bucket
            return Acquisition(count, within, slot)

    async def count_slots(self, bucket: str, *, window_ms: int, now_ms: int) -> int:
        """See RateCounter.count_slots."""
        with self._lock:
            return self._count(bucket, now_ms - window_ms)

    async def release(self, slot: int) -> None:
        """See RateCounter.release."""
        with self._lock:
            bucket = self._bucket_of.pop(slot, None)
            if bucket is not None:
                self._forget(bucket, slot)

    async def prune_slots(self, before_ms: int) -> int:
        """See RateCounter.prune_slots."""
        with self._lock:
            old = [s for s, b in self._bucket_of.items() if self._slots[b][s] < before_ms]
            for slot in old:
                self._forget(self._bucket_of.pop(slot), slot)
            return len(old)

    def _count(self, bucket: str, since_ms: int) -> int:
        slots = self._slots.get(bucket, {})
        return sum(1 for stamped in slots.values() if stamped > since_ms)

    def _forget(self, bucket: str, slot: int) -> None:
        slots = self._slots[bucket]
        slots.pop(slot, None)
        if not slots:
            del self._slots[bucket]
