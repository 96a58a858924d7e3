"""The adapter's HTTP protocol: uvicorn's httptools protocol with a deadline for each request.

uvicorn waits for a request's headers and body as long as the client takes, and a client
that sends them a byte at a time holds its connection open for good. ReadDeadlineProtocol
gives every request `read_timeout_s` to arrive whole, headers and body, counted from its
first byte (from the connection for its first request, so one that never sends a byte is
closed too). Past it, a request whose answer has not started gets 408 in Chat's JSON shape,
and the connection is closed. A request on a connection beyond uvicorn's limit_concurrency
gets 503 in the same shape, instead of uvicorn's plain text. A request whose line and
headers go on past MAX_HEAD_BYTES gets 431 in the same shape and its connection is closed:
uvicorn (unlike gunicorn's own workers, with their limit_request_* settings) holds however
much a client sends before the end of the headers. All three are counted
(chat_policy_adapter_http_limit_refusals_total) and logged at the 1st, 10th, 100th, ... time.

Imported in the worker class, after PROMETHEUS_MULTIPROC_DIR is set (it imports the metrics).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from adapter.answers import Failure, WebhookError, failure_answer
from adapter.metrics import HTTP_LIMITS

log = logging.getLogger(__name__)

_JSON = b"application/json"


def _closing_answer(status_line: bytes, failure: Failure) -> bytes:
    """A whole HTTP answer in Chat's JSON that closes the connection: written below the app,
    straight to the connection."""
    body = failure_answer(WebhookError(failure)).body
    return b"".join(
        [
            b"HTTP/1.1 %s\r\n" % status_line,
            b"content-type: %s\r\n" % _JSON,
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


_TIMEOUT_RESPONSE = _closing_answer(b"408 Request Timeout", Failure.REQUEST_TIMEOUT)
_OVER_CAPACITY_BODY = failure_answer(WebhookError(Failure.TOO_MANY_CONNECTIONS)).body

# Most bytes a request's line and headers may take. Chat's are under 1 KB (the query string
# with Sign, a few headers); gunicorn's workers allowed a 4 KB line and 100 fields of 8 KB.
# Looked at on each read, so a connection holds at most this plus one read's worth. (An end
# of headers split across two reads is counted as head on both sides: at most 3 bytes more.)
MAX_HEAD_BYTES = 32 * 1024
_HEAD_TOO_LARGE_RESPONSE = _closing_answer(
    b"431 Request Header Fields Too Large", Failure.HEADERS_TOO_LARGE
)

# How often each limit refused a request in this worker: logged at powers of ten.
_refused: Counter[str] = Counter()


class ReadDeadlineProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a deadline of `read_timeout_s` for receiving each request, and
    at most MAX_HEAD_BYTES for its line and headers."""

    def __init__(self, *args: Any, read_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timeout_s = read_timeout_s
        self._read_deadline: asyncio.TimerHandle | None = None
        self._headers_received = False  # of the request being read
        self._head_bytes = 0  # received since the last request ended, before headers ended

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Accept the connection; its first request is due within the deadline from now."""
        super().connection_made(transport)
        self._start_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the deadline with the connection."""
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse `data`; if the request's line and headers take more than MAX_HEAD_BYTES,
        answer 431 and close the connection: before parsing when their end is in `data`
        (so the app never sees the request), else once they have gone on past it."""
        if not self._headers_received:
            end = data.find(b"\r\n\r\n")
            if end >= 0 and self._head_bytes + end + 4 > MAX_HEAD_BYTES:
                self._refuse_large_head()
                return
            self._head_bytes += len(data)
        super().data_received(data)
        if (
            not self._headers_received
            and self._head_bytes > MAX_HEAD_BYTES
            and not self.transport.is_closing()
        ):
            self._refuse_large_head()

    def on_message_begin(self) -> None:
        """A request's first byte: its deadline starts (unless the connection's runs)."""
        super().on_message_begin()
        self._headers_received = False
        if self._read_deadline is None:
            self._start_deadline()

    def on_headers_complete(self) -> None:
        """Note that the app may now be answering this request."""
        super().on_headers_complete()
        self._headers_received = True

    def on_message_complete(self) -> None:
        """The request is whole: no deadline until the next one begins, whose line and
        headers are counted afresh."""
        self._cancel_deadline()
        self._headers_received = False
        self._head_bytes = 0
        super().on_message_complete()

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        """Start the app on a request, or the JSON 503 if uvicorn refused it for the limit."""
        if app is service_unavailable:
            app = _over_capacity
        super()._start_asgi_task(cycle, app)

    def _start_deadline(self) -> None:
        self._cancel_deadline()
        self._read_deadline = self.loop.call_later(self._read_timeout_s, self._deadline_passed)

    def _cancel_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _deadline_passed(self) -> None:
        """Answer 408 unless an answer is already on its way (or an earlier request's answer
        is still being written), and close the connection."""
        self._read_deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if self._headers_received:
            # The app reads this request's body (or waits behind an earlier request still
            # being answered, in the pipeline): it sees the connection go.
            can_answer = not cycle.response_started and not self.pipeline
            cycle.disconnected = True
            cycle.message_event.set()
        else:
            can_answer = cycle is None or cycle.response_complete
        if can_answer:
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()
        _count(
            "read_deadline",
            "no whole request within %g s from %s: %s",
            self._read_timeout_s,
            f"{self.client[0]}:{self.client[1]}" if self.client else "unknown",
            "answered 408 and closed" if can_answer else "closed",
        )

    def _refuse_large_head(self) -> None:
        """Answer 431 (the request has not reached the app) and close the connection."""
        self._cancel_deadline()
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_HEAD_TOO_LARGE_RESPONSE)
        self.transport.close()
        _count(
            "header_size",
            "request line and headers past %d bytes from %s: answered 431 and closed",
            MAX_HEAD_BYTES,
            f"{self.client[0]}:{self.client[1]}" if self.client else "unknown",
        )


async def _over_capacity(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI app uvicorn runs instead of ours beyond limit_concurrency: 503, Chat's JSON."""
    _count("max_connections", "answered 503: too many open connections")
    body = _OVER_CAPACITY_BODY
    headers = [
        (b"content-type", _JSON),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _count(limit: str, message: str, *args: object) -> None:
    """Count a refusal by `limit`; log it the 1st, 10th, 100th, ... time in this worker."""
    HTTP_LIMITS.labels(limit).inc()
    _refused[limit] += 1
    count = _refused[limit]
    if count == 10 ** (len(str(count)) - 1):
        log.warning(f"{message} (count in this worker: %d)", *args, count)
