"""The service's clock: Unix milliseconds, for change times, retention, rate limits and the
`time` of policy conditions. One clock, so that they all agree."""

from __future__ import annotations

import time


def now_ms() -> int:
    """The service's clock in Unix milliseconds."""
    return time.time_ns() // 1_000_000
