"""The server interceptor every RPC goes through: request ID, metrics, one canonical log line.

For each RPC it takes the caller's request ID from the `x-request-id` metadata (or makes one)
and runs the handler with it bound (chat_policy_shared.logs.serving), so every line logged while
serving the call carries it; it counts the RPC by method and status code, observes its
latency, and logs one canonical line when the call is answered (a stream: when it ends). A
unary handler puts what it did on that line with chat_policy_shared.logs.describe_call (the
creation decision does), rather than writing a line of its own.

The status code is what the handler left on its context: set_code, or abort (which raises);
an exception without one is UNKNOWN, as grpc answers it; a call whose client went away
before the answer is CANCELLED.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from chat_policy_shared.logs import (
    REQUEST_ID_METADATA,
    CallLine,
    accepted_request_id,
    describing_call,
    serving,
)
from policy_service.api import metrics
from policy_service.errors import StoreUnavailable

log = logging.getLogger(__name__)

# Wrapped handlers are reused per method; a server with a handler for any method name could
# otherwise grow the cache without bound.
MAX_CACHED_METHODS = 1024

_OK = grpc.StatusCode.OK
_UNKNOWN = grpc.StatusCode.UNKNOWN
_CANCELLED = grpc.StatusCode.CANCELLED


def request_id_of(context: grpc.ServicerContext) -> str:
    """The caller's x-request-id if it is acceptable (as the adapter's X-Request-ID), else a
    new random one."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_METADATA:
            return accepted_request_id(value if isinstance(value, str) else None)
    return accepted_request_id(None)


class RpcInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Wraps every method handler of the server (unary or streaming, either way)."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        """The handler for this call, wrapped; None (UNIMPLEMENTED) for an unknown method."""
        handler = continuation(handler_call_details)
        if handler is None:
            # Counted under one label: the method names of unknown calls are the caller's.
            metrics.RPCS.labels("unknown", grpc.StatusCode.UNIMPLEMENTED.name).inc()
            return None
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _wrap(handler, _MethodObserver(method))
        if method in self._wrapped or len(self._wrapped) < MAX_CACHED_METHODS:
            self._wrapped[method] = (handler, wrapped)
        return wrapped


class _MethodObserver:
    """Counts, times and logs the calls of one method."""

    def __init__(self, method: str) -> None:
        self.method = method
        self._latency = metrics.RPC_LATENCY.labels(method)
        self._calls: dict[grpc.StatusCode, Any] = {}
        self._short_name = method.rpartition("/")[2]

    def finish(
        self,
        context: grpc.ServicerContext,
        started: float,
        error: BaseException | None,
        described: CallLine | None = None,
    ) -> None:
        """Record one call that ended now, raising `error` (None: it returned); its line
        carries what the handler `described` of it."""
        elapsed = time.perf_counter() - started
        code = context.code()
        if code is None:
            code = _UNKNOWN if error is not None else _OK
        if code is _OK and not context.is_active():
            code = _CANCELLED
        calls = self._calls.get(code)
        if calls is None:
            calls = self._calls.setdefault(code, metrics.RPCS.labels(self.method, code.name))
        calls.inc()
        self._latency.observe(elapsed)
        if error is not None and _caused_by_store(error):
            metrics.STORE_ERRORS.labels(self._short_name).inc()
        if log.isEnabledFor(logging.INFO):
            fields: dict[str, object] = {
                "rpc_method": self.method,
                "code": code.name,
                "latency_ms": round(elapsed * 1000, 3),
            }
            summary = ""
            if described is not None:
                fields.update(described.fields)
                summary = f": {described.summary}" if described.summary else ""
            log.info("%s answered %s%s", self._short_name, code.name, summary, extra=fields)


def _caused_by_store(error: BaseException) -> bool:
    """Whether a StoreUnavailable is behind `error` (maps_errors aborts while handling it)."""
    seen = 0
    current: BaseException | None = error
    while current is not None and seen < 8:
        if isinstance(current, StoreUnavailable):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def _wrap(handler: grpc.RpcMethodHandler, observer: _MethodObserver) -> grpc.RpcMethodHandler:
    """The same handler with its behaviour observed."""
    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _unary_response(handler.unary_unary, observer), **codec
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _unary_response(handler.stream_unary, observer), **codec
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _stream_response(handler.unary_stream, observer), **codec
        )
    return grpc.stream_stream_rpc_method_handler(
        _stream_response(handler.stream_stream, observer), **codec
    )


Behaviour = Callable[..., Any]


def _unary_response(behaviour: Behaviour, observer: _MethodObserver) -> Behaviour:
    def observed(request: Any, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        with serving(request_id_of(context)), describing_call() as described:
            try:
                response = behaviour(request, context)
            except BaseException as error:
                observer.finish(context, started, error, described)
                raise
            observer.finish(context, started, None, described)
            return response

    return observed


def _stream_response(behaviour: Behaviour, observer: _MethodObserver) -> Behaviour:
    if getattr(behaviour, "experimental_non_blocking", False):
        return _non_blocking_stream(behaviour, observer)

    def observed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        started = time.perf_counter()
        request_id = request_id_of(context)
        error: BaseException | None = None
        responses: Iterator[Any] | None = None
        try:
            # The request ID is bound only while the handler runs: grpc may finish this
            # generator from another thread, whose context the binding must not leak into.
            with serving(request_id):
                responses = iter(behaviour(request, context))
            while True:
                with serving(request_id):
                    try:
                        response = next(responses)
                    except StopIteration:
                        return
                yield response
        except GeneratorExit:  # grpc stopped reading: the client went away
            with serving(request_id):
                close = getattr(responses, "close", None)
                if close is not None:
                    close()
            raise
        except BaseException as caught:
            error = caught
            raise
        finally:
            with serving(request_id):
                observer.finish(context, started, error)

    return observed


def _non_blocking_stream(behaviour: Behaviour, observer: _MethodObserver) -> Behaviour:
    """A stream whose handler answers through a callback (grpc's experimental_non_blocking,
    as the health service's Watch): it ends when the callback is given None."""

    def observed(
        request: Any,
        context: grpc.ServicerContext,
        send_response_callback: Callable[[Any], None],
    ) -> None:
        started = time.perf_counter()
        request_id = request_id_of(context)
        once = threading.Lock()  # held once the call is recorded

        def send(response: Any) -> None:
            if response is None and once.acquire(blocking=False):
                with serving(request_id):
                    observer.finish(context, started, None)
            send_response_callback(response)

        with serving(request_id):
            try:
                behaviour(request, context, send)
            except BaseException as error:
                if once.acquire(blocking=False):
                    observer.finish(context, started, error)
                raise

    for attribute in ("experimental_non_blocking", "experimental_thread_pool"):
        setattr(observed, attribute, getattr(behaviour, attribute, None))
    return observed
