"""With a tracer, the service continues the caller's trace: a server span per unary RPC,
with the decision and the store write as its children (policy_service.api.rpc_spans)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from chatpolicy.v1 import creation_policy_service_pb2 as cpb
from chatpolicy.v1 import group_state_service_pb2 as gpb
from policy_service.access.access_file import token_digest_line
from policy_service.api.rpc_spans import DECIDE_SPAN, STORE_RECORD_SPAN
from policy_service.errors import StoreUnavailable
from tests.policy_service.servers import APP, BrokenStore, Serve, full_event
from tests.spans import RecordedSpans

CHECK = "chatpolicy.v1.CreationPolicyService/CheckGroupCreation"
RECORD = "chatpolicy.v1.GroupStateService/RecordGroupFull"
GET = "chatpolicy.v1.GroupStateService/GetGroupState"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def from_adapter(request_id: str = "req-1") -> tuple[tuple[str, str], ...]:
    """The metadata the adapter sends: its request ID and its webhook span's context."""
    return (("x-request-id", request_id), ("traceparent", TRACEPARENT))


def check_request() -> cpb.CheckGroupCreationRequest:
    """A creation the allow-all default policy allows."""
    return cpb.CheckGroupCreationRequest(
        sdk_app_id=APP, operator_account="alice", owner_account="alice", group_type="Public"
    )


def parent_of(span: ReadableSpan) -> tuple[int, int] | None:
    """The (trace id, span id) of a span's parent; None for a root."""
    return None if span.parent is None else (span.parent.trace_id, span.parent.span_id)


def ids_of(span: ReadableSpan) -> tuple[int, int]:
    """A span's own (trace id, span id)."""
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def test_a_creation_check_continues_the_callers_trace(serve: Serve) -> None:
    """The RPC's server span is the child of the caller's remote span and carries the rpc
    attributes, the code, the caller and the request ID; the decision is its child."""
    spans = RecordedSpans()
    server = serve(tracer=spans.tracer)
    server.creation.CheckGroupCreation(check_request(), metadata=from_adapter())
    rpc = spans.named(CHECK)
    assert rpc.kind is SpanKind.SERVER
    assert parent_of(rpc) == (int(TRACE_ID, 16), int(PARENT_ID, 16))
    assert rpc.parent is not None and rpc.parent.is_remote
    assert dict(rpc.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "chatpolicy.v1.CreationPolicyService",
        "rpc.method": "CheckGroupCreation",
        "rpc.grpc.status_code": 0,
        "chat_policy.caller": "anonymous",
        "chat_policy.request_id": "req-1",
    }
    assert rpc.status.status_code is StatusCode.UNSET
    decision = spans.named(DECIDE_SPAN)
    assert parent_of(decision) == ids_of(rpc)
    attributes = dict(decision.attributes or {})
    assert attributes["chat_policy.rule_id"] == "default"
    assert attributes["chat_policy.decision"] == "allow"
    assert attributes["chat_policy.dry_run"] is False
    assert attributes["chat_policy.error_code"] == 0
    assert str(attributes["chat_policy.decision_id"])


def test_a_dry_run_says_so_on_its_decision(serve: Serve) -> None:
    """A dry run's decision span carries dry_run true."""
    spans = RecordedSpans()
    server = serve(tracer=spans.tracer)
    request = check_request()
    request.dry_run = True
    server.creation.CheckGroupCreation(request, metadata=from_adapter())
    assert dict(spans.named(DECIDE_SPAN).attributes or {})["chat_policy.dry_run"] is True


def test_a_record_has_its_store_write_as_a_child(serve: Serve) -> None:
    """RecordGroupFull's span has the store write inside it, saying what was written."""
    spans = RecordedSpans()
    server = serve(tracer=spans.tracer)
    server.groups.RecordGroupFull(full_event("@TGS#1", 1_700_000_000_000), metadata=from_adapter())
    rpc = spans.named(RECORD)
    write = spans.named(STORE_RECORD_SPAN)
    assert parent_of(write) == ids_of(rpc)
    assert dict(write.attributes or {}) == {
        "chat_policy.sdk_app_id": APP,
        "chat_policy.group_id": "@TGS#1",
        "chat_policy.topic_id": "",
        "chat_policy.event_kind": "full",
        "chat_policy.audited": False,
        "chat_policy.applied": True,
        "chat_policy.full": True,
    }


def test_a_call_without_trace_context_starts_a_trace(serve: Serve) -> None:
    """No traceparent: the RPC's span is a root, with a request ID made for it."""
    spans = RecordedSpans()
    server = serve(tracer=spans.tracer)
    server.creation.CheckGroupCreation(check_request())
    rpc = spans.named(CHECK)
    assert rpc.parent is None
    assert str(dict(rpc.attributes or {})["chat_policy.request_id"])


def test_a_failure_of_the_service_is_an_error_span(serve: Serve) -> None:
    """A call answered UNAVAILABLE (the store is down) is an error; its code is on it."""
    spans = RecordedSpans()
    server = serve(store=BrokenStore(StoreUnavailable("down")), tracer=spans.tracer)
    with pytest.raises(grpc.RpcError):
        server.groups.GetGroupState(gpb.GetGroupStateRequest(sdk_app_id=APP, group_id="g"))
    rpc = spans.named(GET)
    assert (
        dict(rpc.attributes or {})["rpc.grpc.status_code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    )
    assert rpc.status.status_code is StatusCode.ERROR
    assert rpc.status.description == "UNAVAILABLE"


def test_a_refused_caller_is_named_and_not_an_error(serve: Serve, tmp_path: Path) -> None:
    """A call the access file refuses is traced as PERMISSION_DENIED with its caller's
    name, which is the caller's doing, not the service's error."""
    access = tmp_path / "access.toml"
    access.write_text(
        f'[callers.billing]\ntokens = ["{token_digest_line("billing-token")}"]\n'
        'allow = ["group-state.read"]\n'
    )
    spans = RecordedSpans()
    server = serve(tracer=spans.tracer, access_file=access)
    with pytest.raises(grpc.RpcError) as refused:
        server.creation.CheckGroupCreation(
            check_request(), metadata=(("authorization", "Bearer billing-token"),)
        )
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    rpc = spans.named(CHECK)
    attributes = dict(rpc.attributes or {})
    assert attributes["chat_policy.caller"] == "billing"
    assert attributes["rpc.grpc.status_code"] == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert rpc.status.status_code is StatusCode.UNSET
    assert [span.name for span in spans.finished()] == [CHECK]  # nothing was decided


def test_health_checks_are_not_traced(serve: Serve) -> None:
    """The health service (probes every few seconds) makes no spans."""
    spans = RecordedSpans()
    server = serve(tracer=spans.tracer)
    server.health.Check(health_pb2.HealthCheckRequest(service=""))
    server.creation.CheckGroupCreation(check_request())
    assert [span.name for span in spans.finished()] == [DECIDE_SPAN, CHECK]
