"""The interceptor every RPC goes through: the caller's identity and permission, admission,
request ID, metrics, one canonical log line.

RpcInterceptor wraps each method handler of an InterceptedServer once, as it is added (or, a
generic handler's, at its method's first call), in a coroutine (a unary call, or a stream
whose handler writes through its context) or an async generator (a stream whose handler
yields), run on the grpc.aio server's event loop. It is not a grpc.aio ServerInterceptor:
grpc runs those as a chain of coroutines at every call, to find the same handler again.

Identity first (docs/access.md): with an access file, every call's
caller is recognised and checked (policy_service.api.caller_check) before it takes any room
of the budget; a call that may not be made is answered UNAUTHENTICATED
(ERROR_REASON_UNKNOWN_CALLER) or PERMISSION_DENIED (ERROR_REASON_METHOD_NOT_ALLOWED) without
running its handler. The handler runs as its caller (policy_service.access.caller.calling_as);
without an access file every caller is ANONYMOUS.

Admission (the concurrency budget, docs/operating.md): at most `max_streams` streaming
calls (watch and reflection streams) and at most `max_unary` unary calls are served at once;
a call beyond either is answered RESOURCE_EXHAUSTED at once, with ErrorInfo reason
ERROR_REASON_TOO_MANY_STREAMS or ERROR_REASON_OVERLOADED. The health service is never refused
and counts against neither, so an idle stream can never take the room of a health check or of
a unary call.

For each RPC it takes the caller's request ID from the `x-request-id` metadata (or makes one)
and runs the handler with it bound (chat_policy_shared.logs.serving; every call is a task of
its own, so the binding is the call's), so every line logged while serving the call carries
it; it counts the RPC by method and status code, observes its latency, and logs one canonical
line, with the caller's name, when the call is answered (a stream: when it ends). A unary
handler puts what it did on that line with chat_policy_shared.logs.describe_call (the creation
decision does), rather than writing a line of its own. A unary call the adapter makes for a
webhook (`x-chat-policy-webhook` metadata) has the adapter's line as its canonical one: its
own line is DEBUG when it is answered OK, and otherwise INFO with a `webhook` field.

With a tracer (tracing on, docs/tracing.md), each unary call but the health service's is
served inside a server span of its own (policy_service.api.rpc_spans), continuing the trace
the caller sent in its `traceparent` metadata; the span carries the status code and the
caller. Without one, no tracing code runs.

The status code is what the handler left on its context: set_code, or abort (which raises);
an exception without one is UNKNOWN, as grpc answers it; a call whose client went away
before the answer (its task cancelled) is CANCELLED.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from chat_policy_shared.logs import (
    REQUEST_ID_METADATA,
    WEBHOOK_METADATA,
    CallLine,
    accepted_request_id,
    accepted_webhook,
    describing_call,
    serving,
)
from chatpolicy.v1 import error_reason_pb2
from policy_service.access.caller import ANONYMOUS, Caller, calling_as
from policy_service.access.permissions import permission_of
from policy_service.api import metrics
from policy_service.api.caller_check import AUTHORIZATION_METADATA, CallerCheck
from policy_service.api.status import failure, status_for
from policy_service.errors import MethodNotAllowed, StoreUnavailable, UnknownCaller

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from policy_service.api.rpc_spans import RpcSpans

log = logging.getLogger(__name__)

# Wrapped handlers are reused per method; a server with a handler for any method name could
# otherwise grow the cache without bound.
MAX_CACHED_METHODS = 1024

# Never refused, never counted against the budget: a health check must always answer.
EXEMPT_SERVICE_PREFIX = "/grpc.health.v1.Health/"

_OK = grpc.StatusCode.OK
_UNKNOWN = grpc.StatusCode.UNKNOWN
_CANCELLED = grpc.StatusCode.CANCELLED

# The caller on the line of a call refused for want of a known credential.
_UNKNOWN_CALLER = Caller("unknown")


@dataclass
class Budget:
    """How many calls may be served at once, and how many are: `max_streams` streaming
    calls, `max_unary` unary ones (the health service is outside both). One event loop
    serves every call, so plain counts suffice."""

    max_streams: int
    max_unary: int
    streams: int = 0
    unary: int = 0


def read_metadata(context: grpc.aio.ServicerContext) -> tuple[str, str | None, str | None]:
    """The call's request ID: the caller's x-request-id if it is acceptable (as the adapter's
    X-Request-ID), else a new random one; its `authorization` metadata (None: none); and the
    webhook it relays, from `x-chat-policy-webhook` if it is a safe token (None: none).

    One pass over the metadata, which grpc.aio builds anew at each invocation_metadata()
    (about 4 µs here)."""
    request_id = authorization = webhook = None
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_METADATA and request_id is None:
            request_id = value if isinstance(value, str) else None
        elif key == AUTHORIZATION_METADATA and authorization is None:
            authorization = value if isinstance(value, str) else None
        elif key == WEBHOOK_METADATA and webhook is None:
            webhook = value if isinstance(value, str) else None
    return accepted_request_id(request_id), authorization, accepted_webhook(webhook)


class RpcInterceptor:
    """Wraps every method handler of a server (unary or streaming, either way); with a
    caller check, serves only the calls the access file allows; with a budget, admits calls
    within it; with a tracer, serves each unary call in a span."""

    def __init__(
        self,
        budget: Budget | None = None,
        callers: CallerCheck | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self._budget = budget
        self._callers = callers
        self._tracer = tracer

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler of `method` (its full name), its calls observed."""
        exempt = method.startswith(EXEMPT_SERVICE_PREFIX)
        budget = None if exempt else self._budget
        spans = None
        unary_response = handler.unary_unary is not None or handler.stream_unary is not None
        if self._tracer is not None and unary_response and not exempt:
            from policy_service.api.rpc_spans import RpcSpans

            spans = RpcSpans(self._tracer, method)
        return _wrap(handler, _MethodObserver(method, spans), budget, self._callers)


class InterceptedServer(grpc.aio.Server):  # type: ignore[misc]
    """A grpc.aio server (with `options`) whose every method is served through `interceptor`:
    a registered method's handler (what the generated add_*_to_server functions add) is
    wrapped as it is added, a generic handler's the first time its method is called.

    Every method is served by one generic handler (_Methods), none registered with grpc: for
    each method registered with it, grpc.aio's server keeps a request for the next call
    pending, and it waits on all of them again at every call (asyncio.wait, about 6 µs more
    for our sixteen methods than for one).
    """

    def __init__(
        self, interceptor: RpcInterceptor, options: grpc.aio.ChannelArgumentType = ()
    ) -> None:
        self._methods = _Methods(interceptor)
        self._server = grpc.aio.server(handlers=(self._methods,), options=options)

    def add_generic_rpc_handlers(
        self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]
    ) -> None:
        """Serve the methods of these handlers too (after those added before)."""
        self._methods.generic.extend(generic_rpc_handlers)

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        """Serve these methods of `service_name` (before any generic handler's)."""
        for name, handler in method_handlers.items():
            self._methods.register(f"/{service_name}/{name}", handler)

    def add_insecure_port(self, address: str) -> int:
        """Listen on `address` without TLS; the port."""
        return self._server.add_insecure_port(address)  # type: ignore[no-any-return]

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        """Listen on `address` with TLS; the port."""
        return self._server.add_secure_port(address, server_credentials)  # type: ignore[no-any-return]

    async def start(self) -> None:
        """Start serving."""
        await self._server.start()

    async def stop(self, grace: float | None) -> None:
        """Stop serving; calls in flight have `grace` seconds to finish (None: none)."""
        await self._server.stop(grace)

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        """Wait until the server stops, or `timeout` seconds; whether the timeout came first."""
        return await self._server.wait_for_termination(timeout)  # type: ignore[no-any-return]


class _Methods(grpc.GenericRpcHandler):  # type: ignore[misc]
    """The handlers of a server's methods, wrapped: the registered methods', then the
    generic handlers', asked in order. A call to a method none of them serves is counted
    (grpc answers it UNIMPLEMENTED)."""

    def __init__(self, interceptor: RpcInterceptor) -> None:
        self.generic: list[grpc.GenericRpcHandler] = []
        self._interceptor = interceptor
        self._registered: dict[str, grpc.RpcMethodHandler] = {}
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def register(self, method: str, handler: grpc.RpcMethodHandler) -> None:
        """Serve `method` (its full name) with `handler`, wrapped now."""
        self._registered[method] = self._interceptor.wrap(method, handler)

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        """The wrapped handler of this call's method; None (UNIMPLEMENTED) if it has none."""
        method: str = handler_call_details.method
        registered = self._registered.get(method)
        if registered is not None:
            return registered
        for generic in self.generic:
            handler = generic.service(handler_call_details)
            if handler is not None:
                break
        else:
            # Counted under one label: the method names of unknown calls are the caller's.
            metrics.RPCS.labels("unknown", grpc.StatusCode.UNIMPLEMENTED.name).inc()
            return None
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._interceptor.wrap(method, handler)
        if method in self._wrapped or len(self._wrapped) < MAX_CACHED_METHODS:
            self._wrapped[method] = (handler, wrapped)
        return wrapped


class _MethodObserver:
    """Counts, times and logs the calls of one method, and knows the permission it needs;
    with `spans`, its unary calls are traced and their spans say how they were answered."""

    def __init__(self, method: str, spans: RpcSpans | None = None) -> None:
        self.method = method
        self.spans = spans
        self.permission = permission_of(method)
        self._latency = metrics.RPC_LATENCY.labels(method)
        self._calls: dict[grpc.StatusCode, Any] = {}
        self._short_name = method.rpartition("/")[2]

    def finish(
        self,
        context: grpc.aio.ServicerContext,
        started: float,
        error: BaseException | None,
        caller: Caller,
        described: CallLine | None = None,
        webhook: str | None = None,
    ) -> None:
        """Record one call of `caller` that ended now, raising `error` (None: it returned);
        its line carries what the handler `described` of it. The line of a call relaying a
        `webhook` (whose line the adapter writes) is DEBUG if it is answered OK."""
        elapsed = time.perf_counter() - started
        if error is None:
            error = failure()  # answered with an error status by maps_errors
        code = context.code()
        if isinstance(error, asyncio.CancelledError):
            code = _CANCELLED  # the client went away (or the server stopped the call)
        elif code is None:
            code = _UNKNOWN if error is not None else _OK
        elif isinstance(code, int):  # aio keeps the code aborts set as a number
            code = _CODES.get(code, _UNKNOWN)
        if code is _OK and context.cancelled():
            code = _CANCELLED
        calls = self._calls.get(code)
        if calls is None:
            calls = self._calls.setdefault(code, metrics.RPCS.labels(self.method, code.name))
        calls.inc()
        self._latency.observe(elapsed)
        if self.spans is not None:
            self.spans.describe(code, caller.name)
        if error is not None and _caused_by_store(error):
            metrics.STORE_ERRORS.labels(self._short_name).inc()
        level = logging.DEBUG if webhook is not None and code is _OK else logging.INFO
        if log.isEnabledFor(level):
            fields: dict[str, object] = {
                "rpc_method": self.method,
                "caller": caller.name,
                "code": code.name,
                "latency_ms": round(elapsed * 1000, 3),
            }
            if webhook is not None:
                fields["webhook"] = webhook
            summary = ""
            if described is not None:
                fields.update(described.fields)
                summary = f": {described.summary}" if described.summary else ""
            log.log(level, "%s answered %s%s", self._short_name, code.name, summary, extra=fields)


_CODES = {code.value[0]: code for code in grpc.StatusCode}


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


def _admit(
    callers: CallerCheck | None,
    observer: _MethodObserver,
    authorization: str | None,
    context: grpc.aio.ServicerContext,
) -> tuple[Caller, CallLine | None]:
    """The caller of this call, and, when it may not make it, what its line says of the
    refusal, which is left on the context to be answered once the handler returns."""
    if callers is None:
        return ANONYMOUS, None
    try:
        return callers.admit(observer.method, observer.permission, authorization, context), None
    except (UnknownCaller, MethodNotAllowed) as refused:
        _answer(context, rpc_status.to_status(status_for(refused)))
        caller = _UNKNOWN_CALLER if isinstance(refused, UnknownCaller) else Caller(refused.caller)
        return caller, CallLine(str(refused))


def _refuse(context: grpc.aio.ServicerContext, streaming: bool, budget: Budget) -> None:
    """Answer a call beyond the budget RESOURCE_EXHAUSTED with an ErrorInfo, once the handler
    returns (so that the call is counted and logged before its caller hears of it)."""
    _answer(context, _refusal(streaming, budget))


def _answer(context: grpc.aio.ServicerContext, status: grpc.Status) -> None:
    """Leave `status` on the context, for grpc to send once the handler returns."""
    context.set_code(status.code)
    context.set_details(status.details)
    context.set_trailing_metadata(status.trailing_metadata)


def _refusal(streaming: bool, budget: Budget) -> grpc.Status:
    """RESOURCE_EXHAUSTED with an ErrorInfo, for a call beyond the budget."""
    if streaming:
        reason = error_reason_pb2.ERROR_REASON_TOO_MANY_STREAMS
        message = (
            f"this replica serves {budget.max_streams} streams at once"
            " (CHAT_POLICY_MAX_STREAMS): retry later or on another replica"
        )
    else:
        reason = error_reason_pb2.ERROR_REASON_OVERLOADED
        message = (
            f"this replica has {budget.max_unary} calls in flight"
            " (CHAT_POLICY_GRPC_MAX_CONCURRENT): retry with backoff or on another replica"
        )
    info = error_details_pb2.ErrorInfo(
        reason=error_reason_pb2.ErrorReason.Name(reason), domain="chatpolicy.v1"
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message, details=[detail])
    return rpc_status.to_status(status)


def _wrap(
    handler: grpc.RpcMethodHandler,
    observer: _MethodObserver,
    budget: Budget | None,
    callers: CallerCheck | None,
) -> grpc.RpcMethodHandler:
    """The same handler with its behaviour observed (and its caller checked, and admitted
    within the budget)."""
    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _unary_response(handler.unary_unary, observer, budget, callers), **codec
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _unary_response(handler.stream_unary, observer, budget, callers), **codec
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _stream_response(handler.unary_stream, observer, budget, callers), **codec
        )
    return grpc.stream_stream_rpc_method_handler(
        _stream_response(handler.stream_stream, observer, budget, callers), **codec
    )


Behaviour = Callable[..., Any]


def _unary_response(
    behaviour: Behaviour,
    observer: _MethodObserver,
    budget: Budget | None,
    callers: CallerCheck | None,
) -> Behaviour:
    async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        request_id, authorization, webhook = read_metadata(context)
        with serving(request_id), describing_call() as described:
            caller, refused = _admit(callers, observer, authorization, context)
            if refused is not None:
                observer.finish(context, started, None, caller, refused, webhook)
                return None
            if budget is not None and budget.unary >= budget.max_unary:
                _refuse(context, False, budget)
                observer.finish(context, started, None, caller, described, webhook)
                return None
            try:
                if budget is not None:
                    budget.unary += 1
                try:
                    with calling_as(caller):
                        response = await behaviour(request, context)
                finally:
                    if budget is not None:
                        budget.unary -= 1
            except BaseException as error:
                observer.finish(context, started, error, caller, described, webhook)
                raise
            observer.finish(context, started, None, caller, described, webhook)
            return response

    return observed if observer.spans is None else observer.spans.traced(observed)


def _stream_response(
    behaviour: Behaviour,
    observer: _MethodObserver,
    budget: Budget | None,
    callers: CallerCheck | None,
) -> Behaviour:
    if not inspect.isasyncgenfunction(behaviour):
        return _writing_stream(behaviour, observer, budget, callers)

    async def observed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started = time.perf_counter()
        request_id, authorization, _ = read_metadata(context)
        with serving(request_id):
            caller, refused = _admit(callers, observer, authorization, context)
            if refused is not None:
                observer.finish(context, started, None, caller, refused)
                return
            if budget is not None and budget.streams >= budget.max_streams:
                _refuse(context, True, budget)
                observer.finish(context, started, None, caller)
                return
        if budget is not None:
            budget.streams += 1
        error: BaseException | None = None
        responses = behaviour(request, context)
        try:
            # The request ID and the caller are bound only while the handler runs, never
            # across a yield: a generator grpc leaves suspended is closed later, maybe from
            # another task, whose context the binding must not leak into (nor be reset from).
            while True:
                with serving(request_id), calling_as(caller):
                    try:
                        response = await responses.__anext__()
                    except StopAsyncIteration:
                        return
                yield response
        except GeneratorExit:  # grpc stopped reading: the client went away
            with serving(request_id), calling_as(caller):
                await responses.aclose()
            raise
        except BaseException as caught:
            error = caught
            raise
        finally:
            if budget is not None:
                budget.streams -= 1
            with serving(request_id):
                observer.finish(context, started, error, caller)

    return observed


def _writing_stream(
    behaviour: Behaviour,
    observer: _MethodObserver,
    budget: Budget | None,
    callers: CallerCheck | None,
) -> Behaviour:
    """A stream whose handler is a coroutine writing through context.write (as the health
    service's Watch): it ends when the coroutine returns."""

    async def observed(request: Any, context: grpc.aio.ServicerContext) -> None:
        started = time.perf_counter()
        error: BaseException | None = None
        counted = False
        request_id, authorization, _ = read_metadata(context)
        with serving(request_id):
            caller, refused = _admit(callers, observer, authorization, context)
            if refused is not None:
                observer.finish(context, started, None, caller, refused)
                return
            try:
                if budget is not None:
                    if budget.streams >= budget.max_streams:
                        _refuse(context, True, budget)
                        return
                    budget.streams += 1
                    counted = True
                with calling_as(caller):
                    await behaviour(request, context)
            except BaseException as caught:
                error = caught
                raise
            finally:
                if counted:
                    assert budget is not None
                    budget.streams -= 1
                observer.finish(context, started, error, caller)

    return observed
