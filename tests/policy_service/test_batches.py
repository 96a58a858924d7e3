"""Batcher (stores/batches.py): calls submitted together are written together, each caller
gets its own result, and no caller is left waiting. The seam is the `write` function."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Sequence

import pytest

from policy_service.stores.batches import Batcher
from policy_service.stores.deadline import call_deadline, current_deadline

caller_tag: contextvars.ContextVar[str] = contextvars.ContextVar("caller_tag", default="")


class Writes:
    """A `write` that doubles each item (or fails the odd ones, or raises), remembering each
    batch, the deadline and caller tag it ran with; it waits `pause_s` as a database would."""

    def __init__(self, pause_s: float = 0.0, *, fail_odd: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.deadlines: list[float | None] = []
        self.tags: list[str] = []
        self.pause_s = pause_s
        self.fail_odd = fail_odd
        self.raise_error: Exception | None = None

    async def __call__(self, items: Sequence[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        self.deadlines.append(current_deadline())
        self.tags.append(caller_tag.get())
        await asyncio.sleep(self.pause_s)
        if self.raise_error is not None:
            raise self.raise_error
        return [ValueError(f"odd {i}") if self.fail_odd and i % 2 else 2 * i for i in items]


def one_lane(writes: Writes, max_batch: int) -> Batcher[int, int]:
    """A Batcher of one batch at a time, however long it takes."""
    return Batcher(writes, max_batch=max_batch, max_lanes=1, stall_s=60)


def test_calls_submitted_together_are_written_in_one_batch_each_getting_its_own() -> None:
    async def scenario() -> tuple[list[int], Writes]:
        writes = Writes()
        batcher = one_lane(writes, 100)
        return list(await asyncio.gather(*(batcher.submit(i) for i in range(10)))), writes

    results, writes = asyncio.run(scenario())
    assert results == [2 * i for i in range(10)]
    assert writes.batches == [list(range(10))]


def test_calls_submitted_during_a_batch_go_in_the_next_one_of_at_most_max_batch() -> None:
    async def scenario() -> Writes:
        writes = Writes(pause_s=0.05)
        batcher = one_lane(writes, 3)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.01)  # the first batch is in flight
        rest = await asyncio.gather(*(batcher.submit(i) for i in range(1, 8)))
        assert [await first, *rest] == [2 * i for i in range(8)]
        return writes

    assert asyncio.run(scenario()).batches == [[0], [1, 2, 3], [4, 5, 6], [7]]


def test_an_items_exception_is_its_callers_alone_and_a_raised_one_everyones() -> None:
    async def scenario() -> tuple[list[object], list[object]]:
        writes = Writes(fail_odd=True)
        batcher = one_lane(writes, 100)
        each = await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)
        writes.raise_error = RuntimeError("database gone")
        every = await asyncio.gather(*(batcher.submit(i) for i in range(2)), return_exceptions=True)
        return each, every

    each, every = asyncio.run(scenario())
    assert [r if isinstance(r, int) else str(r) for r in each] == [0, "odd 1", 4, "odd 3"]
    assert [str(r) for r in every] == ["database gone", "database gone"]


def test_a_caller_that_gives_up_before_its_batch_is_not_written() -> None:
    async def scenario() -> tuple[Writes, int]:
        writes = Writes(pause_s=0.05)
        batcher = one_lane(writes, 100)
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.01)
        gone = asyncio.ensure_future(batcher.submit(2))
        stays = asyncio.ensure_future(batcher.submit(3))
        await asyncio.sleep(0)
        gone.cancel()
        await first
        return writes, await stays

    writes, stays = asyncio.run(scenario())
    assert (writes.batches, stays) == ([[1], [3]], 6)


def test_a_batch_written_when_its_caller_gives_up_still_completes() -> None:
    async def scenario() -> tuple[Writes, int]:
        writes = Writes(pause_s=0.05)
        batcher = one_lane(writes, 100)
        gone = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.01)  # taken into the batch, being written
        gone.cancel()
        return writes, await batcher.submit(2)

    writes, second = asyncio.run(scenario())
    assert (writes.batches, second) == ([[1], [2]], 4)


def test_a_batch_runs_outside_its_callers_context_with_their_latest_deadline() -> None:
    async def submit(batcher: Batcher[int, int], item: int, remaining_s: float | None) -> int:
        caller_tag.set(f"caller {item}")
        with call_deadline(remaining_s):
            return await batcher.submit(item)

    async def scenario() -> tuple[Writes, float]:
        writes = Writes()
        batcher = one_lane(writes, 100)
        started = time.monotonic()
        await asyncio.gather(submit(batcher, 1, 5.0), submit(batcher, 2, 30.0))
        await asyncio.gather(submit(batcher, 3, 5.0), submit(batcher, 4, None))
        return writes, started

    writes, started = asyncio.run(scenario())
    assert writes.tags == ["", ""]
    latest, unbounded = writes.deadlines
    assert latest is not None and 30 <= latest - started < 31
    assert unbounded is None


def test_drain_waits_for_every_call_submitted() -> None:
    async def scenario() -> Writes:
        writes = Writes(pause_s=0.02)
        batcher = one_lane(writes, 1)
        calls = [asyncio.ensure_future(batcher.submit(i)) for i in range(3)]
        await asyncio.sleep(0)
        await batcher.drain()
        assert all(call.done() for call in calls)
        return writes

    assert asyncio.run(scenario()).batches == [[0], [1], [2]]


def test_cancelled_batch_cancels_its_callers_and_those_queued() -> None:
    async def scenario() -> list[object]:
        writes = Writes(pause_s=10)
        batcher = one_lane(writes, 1)
        calls = [asyncio.ensure_future(batcher.submit(i)) for i in range(3)]
        await asyncio.sleep(0.01)
        for task in asyncio.all_tasks():
            if task.get_coro().__qualname__ == "Batcher._run":  # type: ignore[union-attr]
                task.cancel()  # the batches' own task, as a loop shutting down would
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = asyncio.run(asyncio.wait_for(scenario(), 5))
    assert [type(outcome) for outcome in outcomes] == [asyncio.CancelledError] * 3


@pytest.mark.parametrize("max_batch", [1, 64])
def test_many_callers_each_get_their_own_result(max_batch: int) -> None:
    async def scenario() -> list[int]:
        batcher = one_lane(Writes(), max_batch)
        return list(await asyncio.gather(*(batcher.submit(i) for i in range(500))))

    assert asyncio.run(scenario()) == [2 * i for i in range(500)]


class HeldWrites(Writes):
    """Writes whose batches holding item 0 wait until `release` is set, as a batch waiting
    for another process's lock would."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def __call__(self, items: Sequence[int]) -> list[int | Exception]:
        if 0 in items:
            self.batches.append(list(items))
            await self.release.wait()
            return [2 * i for i in items]
        return await super().__call__(items)


@pytest.mark.parametrize("submitted_after_s", [0.01, 0.1], ids=["before", "after"])
def test_a_stalled_batch_makes_room_for_the_next_ones_after_stall_s(
    submitted_after_s: float,
) -> None:
    """Calls submitted before the batch in flight stalls (0.05 s) or after it did are
    written in a batch beside it."""

    async def scenario() -> tuple[list[int], bool, list[list[int]]]:
        writes = HeldWrites()
        batcher = Batcher(writes, max_batch=100, max_lanes=2, stall_s=0.05)
        held = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(submitted_after_s)
        later = await asyncio.wait_for(asyncio.gather(*(batcher.submit(i) for i in (1, 2))), 5)
        still_held = not held.done()
        writes.release.set()
        assert await held == 0
        return list(later), still_held, writes.batches

    later, still_held, batches = asyncio.run(scenario())
    assert (later, still_held, batches) == ([2, 4], True, [[0], [1, 2]])


def test_no_more_than_max_lanes_batches_are_in_flight() -> None:
    async def scenario() -> tuple[bool, list[list[int]]]:
        writes = HeldWrites()
        batcher = Batcher(writes, max_batch=1, max_lanes=2, stall_s=0.01)
        calls = [asyncio.ensure_future(batcher.submit(i)) for i in (0, 0, 3)]
        await asyncio.sleep(0.2)  # two lanes, both held; the third call waits for one
        third_waited = not calls[2].done()
        writes.release.set()
        assert await asyncio.gather(*calls) == [0, 0, 6]
        return third_waited, writes.batches

    assert asyncio.run(scenario()) == (True, [[0], [0], [3]])


def test_calls_submitted_one_after_another_are_each_written() -> None:
    """Each call submitted as soon as the previous one returned (its lane just ending) gets
    a lane: none waits for one that has gone."""

    async def scenario() -> list[int]:
        batcher = Batcher(Writes(), max_batch=100, max_lanes=4, stall_s=0.05)
        async with asyncio.timeout(5):  # no task of its own, unlike wait_for: no delay
            return [await batcher.submit(i) for i in range(20)]

    assert asyncio.run(scenario()) == [2 * i for i in range(20)]
