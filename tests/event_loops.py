"""Calling asyncio code from plain (threaded) test code: an event loop on a thread of its own,
and a blocking view of an object whose methods are coroutines."""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """An event loop running in a daemon thread until stop()."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self._thread.start()

    def run(self, awaitable: Awaitable[T], timeout_s: float | None = 60) -> T:
        """Run a coroutine (or await any awaitable) on the loop; its result, or its exception."""

        async def wrapped() -> T:
            return await awaitable

        future = asyncio.run_coroutine_threadsafe(wrapped(), self.loop)
        return future.result(timeout_s)

    def stop(self) -> None:
        """Stop the loop and join its thread (tasks still pending are dropped)."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class Blocking:
    """A view of `target` whose coroutine methods block the calling thread until done, each
    run on `loop`; other attributes pass through. Many threads may call at once: their
    coroutines overlap on the loop, as concurrent RPCs' would."""

    def __init__(self, target: Any, loop: LoopThread) -> None:
        self.target = target
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.target, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        @functools.wraps(attribute)
        def call(*args: Any, **kwargs: Any) -> Any:
            return self._loop.run(attribute(*args, **kwargs))

        return call


def blocking_open(
    loop: LoopThread, opener: Callable[..., Coroutine[Any, Any, T]], *args: Any
) -> Any:
    """Open something with an async opener on `loop` (where it must then be used) and return
    its Blocking view."""
    return Blocking(loop.run(opener(*args)), loop)
