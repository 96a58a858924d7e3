"""The one table from domain errors to gRPC status codes with google.rpc.ErrorInfo details."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from chat_policy_shared.field_limits import echo
from chatpolicy.v1 import error_reason_pb2
from policy_service.errors import (
    ChangeLogExpired,
    GroupNotFound,
    InvalidArgument,
    InvalidPageToken,
    MethodNotAllowed,
    SequenceAhead,
    ShuttingDown,
    StoreUnavailable,
    TooManyWatchers,
    UnknownCaller,
    ValueNotStorable,
)
from policy_service.stores.deadline import call_deadline

ERROR_DOMAIN = "chatpolicy.v1"

# Domain error -> (canonical code, ErrorReason). Anything else is INTERNAL, never UNKNOWN.
STATUS_TABLE: dict[type[Exception], tuple[int, int]] = {
    InvalidArgument: (code_pb2.INVALID_ARGUMENT, error_reason_pb2.ERROR_REASON_INVALID_ARGUMENT),
    InvalidPageToken: (
        code_pb2.INVALID_ARGUMENT,
        error_reason_pb2.ERROR_REASON_INVALID_PAGE_TOKEN,
    ),
    GroupNotFound: (code_pb2.NOT_FOUND, error_reason_pb2.ERROR_REASON_GROUP_NOT_FOUND),
    StoreUnavailable: (code_pb2.UNAVAILABLE, error_reason_pb2.ERROR_REASON_STORE_UNAVAILABLE),
    ChangeLogExpired: (code_pb2.OUT_OF_RANGE, error_reason_pb2.ERROR_REASON_CHANGE_LOG_EXPIRED),
    SequenceAhead: (code_pb2.OUT_OF_RANGE, error_reason_pb2.ERROR_REASON_SEQUENCE_AHEAD),
    TooManyWatchers: (
        code_pb2.RESOURCE_EXHAUSTED,
        error_reason_pb2.ERROR_REASON_TOO_MANY_WATCHERS,
    ),
    ShuttingDown: (code_pb2.UNAVAILABLE, error_reason_pb2.ERROR_REASON_SHUTTING_DOWN),
    ValueNotStorable: (
        code_pb2.INVALID_ARGUMENT,
        error_reason_pb2.ERROR_REASON_VALUE_NOT_STORABLE,
    ),
    UnknownCaller: (code_pb2.UNAUTHENTICATED, error_reason_pb2.ERROR_REASON_UNKNOWN_CALLER),
    MethodNotAllowed: (
        code_pb2.PERMISSION_DENIED,
        error_reason_pb2.ERROR_REASON_METHOD_NOT_ALLOWED,
    ),
}
INTERNAL = (code_pb2.INTERNAL, error_reason_pb2.ERROR_REASON_INTERNAL)

log = logging.getLogger(__name__)

# The error the current call failed with (each call is a task of its own, with its own value).
_failure: ContextVar[Exception | None] = ContextVar("rpc_failure", default=None)

Method = TypeVar("Method", bound=Callable[..., Any])


def status_for(error: Exception) -> status_pb2.Status:
    """The google.rpc.Status a caller receives for `error`."""
    code, reason = STATUS_TABLE.get(type(error), INTERNAL)
    message = str(error) if code != code_pb2.INTERNAL else "internal error"
    info = error_details_pb2.ErrorInfo(
        reason=error_reason_pb2.ErrorReason.Name(reason),
        domain=ERROR_DOMAIN,
        metadata=_metadata(error),
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    return status_pb2.Status(code=code, message=message, details=[detail])


def maps_errors(method: Method) -> Method:
    """Decorate a unary servicer coroutine (grpc.aio): it runs within the call's deadline
    (see policy_service.stores.deadline), and every exception becomes a status from
    STATUS_TABLE."""

    @functools.wraps(method)
    async def wrapper(self: object, request: object, context: grpc.aio.ServicerContext) -> object:
        try:
            with call_deadline(_remaining_s(context)):
                return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            _fail(context, error, method)
            return None

    return wrapper  # type: ignore[return-value]


def maps_stream_errors(method: Method) -> Method:
    """Like maps_errors, for a server-streaming async generator: errors raised while
    streaming, too."""

    @functools.wraps(method)
    async def wrapper(
        self: object, request: object, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[object]:
        try:
            async with contextlib.aclosing(method(self, request, context)) as responses:
                async for response in responses:
                    yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            _fail(context, error, method)

    return wrapper  # type: ignore[return-value]


def failure() -> Exception | None:
    """The error the call being served failed with, as maps_errors answered it (the
    interceptor reads it once the handler has returned)."""
    return _failure.get()


def _remaining_s(context: grpc.aio.ServicerContext) -> float | None:
    """The call's time left, None when it has no deadline."""
    remaining = context.time_remaining()
    if remaining is None or remaining > 1e9:  # no deadline
        return None
    return float(remaining)


def _fail(context: grpc.aio.ServicerContext, error: Exception, method: Callable[..., Any]) -> None:
    """Leave the status of `error` on the context, for grpc to send once the handler returns.

    Not context.abort: grpc.aio's sends the status before it raises, so the caller could
    see the answer before the interceptor has counted and logged the call.
    """
    if type(error) not in STATUS_TABLE:
        log.exception("unexpected error in %s", method.__qualname__)
    _failure.set(error)
    status = rpc_status.to_status(status_for(error))
    context.set_code(status.code)
    context.set_details(status.details)
    context.set_trailing_metadata(status.trailing_metadata)


def _metadata(error: Exception) -> dict[str, str]:
    if isinstance(error, InvalidArgument):
        return {"field": error.field}
    if isinstance(error, ChangeLogExpired):
        return {
            "after_sequence": str(error.after_sequence),
            "oldest_sequence": str(error.oldest_sequence),
        }
    if isinstance(error, SequenceAhead):
        return {
            "after_sequence": str(error.after_sequence),
            "head_sequence": str(error.head_sequence),
        }
    if isinstance(error, GroupNotFound):
        return {
            "sdk_app_id": str(error.sdk_app_id),
            "group_id": echo(error.group_id),
            "topic_id": echo(error.topic_id),
        }
    if isinstance(error, UnknownCaller):
        return {"method": error.method}
    if isinstance(error, MethodNotAllowed):
        return {"caller": error.caller, "method": error.method, "permission": error.permission}
    return {}
