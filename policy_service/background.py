"""Background tasks of the service's event loop: stopping one."""

from __future__ import annotations

import asyncio
import contextlib


async def cancel_task(task: asyncio.Task[None] | None) -> None:
    """Cancel a background task that has not ended and wait until it has; None or an ended
    task is left as it is."""
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
