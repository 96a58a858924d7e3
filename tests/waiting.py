"""Waiting in tests for a condition that another thread or process makes true."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def wait_for(
    condition: Callable[[], bool], timeout_s: float = 5.0, what: str = "the condition"
) -> None:
    """Poll `condition()` until true; fail the test naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.01)
