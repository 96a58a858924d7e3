"""JSON log lines on stdout for every chat-policy process, each carrying its request ID.

The request being served is held in a context variable: the adapter's middleware sets it from
X-Request-ID, the policy service's interceptor from the `x-request-id` gRPC metadata, and every
line logged while it is set carries it as `request_id`. Fields passed with `extra=` become
JSON fields of their own.

One INFO line per webhook: the adapter's. A call the adapter makes for a webhook carries
`x-chat-policy-webhook`, and the service's line for it is DEBUG unless it failed.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
import secrets
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import orjson

from chat_policy_shared.context_binding import Binding

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_METADATA = "x-request-id"
# On a call the adapter makes for a webhook: the webhook's CallbackCommand. The adapter's line
# for the webhook is then the canonical one, and the service logs the call's line at DEBUG
# when it is answered OK.
WEBHOOK_METADATA = "x-chat-policy-webhook"

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
# The unary RPC being served: what its handler adds to the call's one canonical line.
_call_line: ContextVar[CallLine | None] = ContextVar("call_line", default=None)

_ACCEPTABLE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# Every attribute a LogRecord has of its own: any other one came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class RequestIdFilter(logging.Filter):
    """Puts the current request ID on each record (when one is set and none was given)."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = request_id.get()
        if current is not None and not hasattr(record, "request_id"):
            record.request_id = current
        return True


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: time (UTC, ISO 8601, milliseconds), level, logger, pid,
    message, then the fields given with `extra=`, and a traceback as `exc_info`.

    Written for the hot path, where python-json-logger's OrjsonFormatter took about twice as
    long a line: orjson serialises, and the time's text is made once a second.
    """

    _second: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        """The record's line."""
        document: dict[str, object] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES:
                document[key] = value
        if record.exc_info:
            document["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack_info"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(document, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # an integer beyond 64 bits, which orjson refuses
            return json.dumps(document, default=str, ensure_ascii=False)

    def _time(self, created: float) -> str:
        second = int(created)
        cached = self._second
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            self._second = cached
        return f"{cached[1]}.{int((created - second) * 1000):03d}Z"


def config(level: str = "INFO") -> dict[str, Any]:
    """logging.config.dictConfig settings: the root logger writes JSON lines to stdout."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "json",
                "filters": ["request_id"],
            }
        },
        "root": {"level": level, "handlers": ["stdout"]},
    }


def configure(level: str = "INFO") -> None:
    """Send every log record of this process to stdout as one JSON line.

    Records skip what no line shows, as the logging HOWTO's "Optimization" section describes:
    the caller's file, function and line (a walk up the stack per record), and the thread's and
    multiprocessing's names. Together they were a third of the cost of a line.
    """
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging.config.dictConfig(config(level))


def accepted_request_id(given: str | None) -> str:
    """The caller's request ID if it is a short token of safe characters, else a new one."""
    if given and _ACCEPTABLE_ID.fullmatch(given):
        return given
    return secrets.token_hex(16)


def accepted_webhook(given: str | None) -> str | None:
    """The webhook a call says it relays, if it is a short token of safe characters (as a
    CallbackCommand is), else None: the value is the caller's and lands in the log."""
    if given and _ACCEPTABLE_ID.fullmatch(given):
        return given
    return None


@dataclass
class CallLine:
    """What the handler of an RPC says about it on the RPC's canonical line: a few words for
    the message, and fields."""

    summary: str = ""
    fields: dict[str, object] = field(default_factory=dict)


def describing_call() -> Binding[CallLine]:
    """Within the block, describe_call adds to the CallLine it gives."""
    return Binding(_call_line, CallLine())


def describe_call(summary: str, **fields: object) -> None:
    """Put a summary and fields on the canonical line of the RPC being served (the policy
    service's interceptor writes it), rather than logging a line of one's own; outside an
    RPC, nothing."""
    line = _call_line.get()
    if line is not None:
        line.summary = summary
        line.fields.update(fields)


def serving(current: str) -> Binding[str]:
    """Within the block, log lines carry `current` as their request ID."""
    return Binding(request_id, current)
