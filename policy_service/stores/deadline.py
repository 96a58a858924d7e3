"""The deadline of the call being served, for code far below the servicer (the store).

A servicer sets it from the gRPC context for the duration of a call; the store caps its
waits with it, so that no call keeps the store busy long after its caller has given up.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

from chat_policy_shared.context_binding import Binding

_deadline: ContextVar[float | None] = ContextVar("call_deadline", default=None)


def call_deadline(remaining_s: float | None) -> Binding[float | None]:
    """Within the block, the current call must end within remaining_s (None: no deadline)."""
    return deadline_at(None if remaining_s is None else time.monotonic() + remaining_s)


def deadline_at(deadline: float | None) -> Binding[float | None]:
    """Within the block, the current call must end by `deadline` (time.monotonic(); None: no
    deadline): a deadline current_deadline gave, carried to another task."""
    return Binding(_deadline, deadline)


def current_deadline() -> float | None:
    """When the current call must end (time.monotonic()), or None if it has no deadline."""
    return _deadline.get()


def capped(wait_s: float) -> float:
    """wait_s, or less if the current call's deadline comes sooner (never below 1 ms)."""
    deadline = _deadline.get()
    if deadline is None:
        return wait_s
    return max(0.001, min(wait_s, deadline - time.monotonic()))
