"""Spans of the policy service (OpenTelemetry), made only when tracing is on (docs/tracing.md).

- a server span per unary RPC, continuing the caller's trace from its `traceparent` metadata
  (the adapter sends it next to `x-request-id`), named by the full method and carrying the
  rpc.* attributes, the status code, the caller (the access file's name) and the request ID;
- inside CheckGroupCreation, a span of the policy decision: its rule, effect, dry run;
- inside the Record* and ClearGroupFull calls, a span of the group-state store write.

Streams (watch, reflection) and the health service are not traced: a stream lasts hours,
and a probe's trace every few seconds would bury the webhooks'.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from chat_policy_shared.logs import request_id
from chat_policy_shared.trace_context import trace_context_of
from policy_service.engine.policy import Decision
from policy_service.groups.state import GroupEvent, RecordOutcome

Behaviour = Callable[..., Any]

DECIDE_SPAN = "chat_policy.decide"
STORE_RECORD_SPAN = "chat_policy.store.record"

# The codes that make a server span an error (OpenTelemetry's gRPC conventions): the others
# are the caller's doing.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class RpcSpans:
    """The server spans of one method."""

    def __init__(self, tracer: Tracer, method: str) -> None:
        service, _, name = method.lstrip("/").partition("/")
        self._tracer = tracer
        self._name = f"{service}/{name}"
        self._attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

    def traced(self, behaviour: Behaviour) -> Behaviour:
        """A unary `behaviour` served inside its call's span; the interceptor describes the
        call on it as it answers (describe)."""

        async def traced_call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            parent = trace_context_of(context.invocation_metadata() or ())
            with self._tracer.start_as_current_span(
                self._name,
                context=parent,
                kind=SpanKind.SERVER,
                attributes=self._attributes,
                # The answer's code says what went wrong (describe); aborts are not errors.
                record_exception=False,
                set_status_on_exception=False,
            ):
                return await behaviour(request, context)

        return traced_call

    @staticmethod
    def describe(code: grpc.StatusCode, caller: str) -> None:
        """Put the call's answer and caller on its span, the current one."""
        span = trace.get_current_span()
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        span.set_attribute("chat_policy.caller", caller)
        current = request_id.get()
        if current is not None:
            span.set_attribute("chat_policy.request_id", current)
        if code in _SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, code.name))


class OperationSpans:
    """The spans of what a call does inside its server span: decide, write to the store."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    async def decision(self, deciding: Awaitable[Decision], dry_run: bool) -> Decision:
        """Await a policy decision inside a span that says what was decided."""
        with self._tracer.start_as_current_span(
            DECIDE_SPAN, attributes={"chat_policy.dry_run": dry_run}
        ) as span:
            decision = await deciding
            span.set_attributes(
                {
                    "chat_policy.rule_id": decision.rule_id,
                    "chat_policy.decision": decision.outcome.effect.value,
                    "chat_policy.decision_id": decision.decision_id,
                    "chat_policy.policy_revision": decision.policy_revision,
                    "chat_policy.error_code": decision.outcome.error_code,
                }
            )
            return decision

    async def record(
        self, recording: Awaitable[RecordOutcome], event: GroupEvent, audited: bool
    ) -> RecordOutcome:
        """Await a group-state store write inside a span that says what was written."""
        key = event.key
        attributes: dict[str, AttributeValue] = {
            "chat_policy.sdk_app_id": key.sdk_app_id,
            "chat_policy.group_id": key.group_id,
            "chat_policy.topic_id": key.topic_id,
            "chat_policy.event_kind": event.kind.name.lower(),
            "chat_policy.audited": audited,
        }
        with self._tracer.start_as_current_span(STORE_RECORD_SPAN, attributes=attributes) as span:
            outcome = await recording
            span.set_attribute("chat_policy.applied", outcome.applied)
            span.set_attribute("chat_policy.full", outcome.state.full)
            return outcome
