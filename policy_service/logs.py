"""JSON log lines on stdout for every chat-policy process, each carrying its request ID.

The request being served is held in a context variable: the adapter's middleware sets it from
X-Request-ID, the policy service's interceptor from the `x-request-id` gRPC metadata, and every
line logged while it is set carries it as `request_id`. Fields passed with `extra=` become
JSON fields of their own.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_METADATA = "x-request-id"

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

_FIELDS = ("asctime", "levelname", "name", "process", "message")
_RENAMED = {"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"}


class _RequestIdFilter(logging.Filter):
    """Puts the current request ID on each record (when one is set and none was given)."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = request_id.get()
        if current is not None and not hasattr(record, "request_id"):
            record.request_id = current
        return True


def formatter() -> logging.Formatter:
    """The JSON formatter: time (UTC, ISO 8601), level, logger, pid, message, then extras."""
    json_formatter = JsonFormatter(
        _FIELDS,
        rename_fields=_RENAMED,
        timestamp=False,
        json_ensure_ascii=False,
    )
    json_formatter.converter = time.gmtime
    json_formatter.default_msec_format = "%s.%03dZ"
    json_formatter.default_time_format = "%Y-%m-%dT%H:%M:%S"
    return json_formatter


def configure(level: int = logging.INFO) -> None:
    """Send every log record of this process to stdout as one JSON line."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter())
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


@contextmanager
def serving(current: str) -> Iterator[None]:
    """Within the block, log lines carry `current` as their request ID."""
    token = request_id.set(current)
    try:
        yield
    finally:
        request_id.reset(token)
