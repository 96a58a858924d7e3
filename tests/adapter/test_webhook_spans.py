"""With a tracer, each webhook is a server span, current while the policy service is called,
and its context rides on the gRPC call next to the request ID (and the webhook it relays)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanContext, SpanKind, StatusCode

from adapter.group_state import REPLAY_SPAN, replay_to
from adapter.policy_client import GrpcPolicyClient, RecordRequest
from adapter.spool import SpooledEvent
from chat_policy_shared.channel import ChannelSecurity
from chat_policy_shared.trace_context import with_trace_context
from chatpolicy.v1 import creation_policy_service_pb2 as cpb
from chatpolicy.v1 import creation_policy_service_pb2_grpc
from chatpolicy.v1 import group_state_service_pb2 as spb
from tests.adapter.chat import APP, FakePolicyClient, FakeRpcError, MakeChat
from tests.spans import RecordedSpans

CREATE = "Group.CallbackBeforeCreateGroup"
FULL = "Group.CallbackAfterGroupFull"


@dataclass
class SpanWatchingClient(FakePolicyClient):
    """A fake that also notes the span current at each call."""

    current: list[SpanContext] = field(default_factory=list)

    async def check_group_creation(
        self,
        request: cpb.CheckGroupCreationRequest,
        request_id: str,
        webhook: str | None = None,
    ) -> cpb.CheckGroupCreationResponse:
        self.current.append(trace.get_current_span().get_span_context())
        return await super().check_group_creation(request, request_id, webhook)

    async def record(
        self, request: RecordRequest, request_id: str, webhook: str | None = None
    ) -> bool:
        self.current.append(trace.get_current_span().get_span_context())
        return await super().record(request, request_id, webhook)


def test_a_webhook_is_a_server_span_current_during_the_call(make_chat: MakeChat) -> None:
    """A creation webhook's span carries the command, SdkAppid, outcome, status and request
    ID, and is the current span while the policy service is asked."""
    spans = RecordedSpans()
    fake = SpanWatchingClient()
    chat = make_chat(fake, tracer=spans.tracer)
    result = chat.post(CREATE, {"Operator_Account": "alice"}, headers={"X-Request-ID": "req-9"})
    assert result.status_code == 200
    span = spans.named("POST /")
    assert span.kind is SpanKind.SERVER
    assert span.parent is None  # Chat sends no trace context: a webhook starts its trace
    assert dict(span.attributes or {}) == {
        "http.request.method": "POST",
        "http.route": "/",
        "http.response.status_code": 200,
        "chat_policy.command": CREATE,
        "chat_policy.sdk_app_id": APP,
        "chat_policy.outcome": "allowed",
        "chat_policy.request_id": "req-9",
    }
    assert fake.current == [span.context]
    assert not trace.get_current_span().get_span_context().is_valid  # detached after


def test_the_outcome_is_the_answers_kind(make_chat: MakeChat) -> None:
    """Fail-open, spooled and refused answers are told apart on the span; a 503 is an error."""
    spans = RecordedSpans()
    unavailable = FakeRpcError(grpc.StatusCode.UNAVAILABLE)
    chat = make_chat(FakePolicyClient(error=unavailable), tracer=spans.tracer)
    chat.post(CREATE, {"Operator_Account": "alice"})
    chat.post(FULL, {"GroupId": "g", "EventTime": 1})
    chat.spool.close()
    chat.post(FULL, {"GroupId": "g", "EventTime": 2})
    chat.post(CREATE, {}, SdkAppid="1")
    outcomes = [
        (
            dict(span.attributes or {})["chat_policy.outcome"],
            dict(span.attributes or {})["http.response.status_code"],
            span.status.status_code,
        )
        for span in spans.finished()
    ]
    assert outcomes == [
        ("fail-open", 200, StatusCode.UNSET),
        ("spooled", 200, StatusCode.UNSET),
        ("spool_unavailable", 503, StatusCode.ERROR),
        ("unknown_sdkappid", 403, StatusCode.UNSET),
    ]
    assert "chat_policy.sdk_app_id" not in dict(spans.finished()[-1].attributes or {})


def test_other_paths_make_no_span(make_chat: MakeChat) -> None:
    """Probes and scrapes are not webhooks: no span."""
    spans = RecordedSpans()
    chat = make_chat(tracer=spans.tracer)
    chat.client.simulate_get("/healthz")
    chat.client.simulate_post("/elsewhere")
    assert spans.finished() == []


def test_without_a_tracer_nothing_is_traced(make_chat: MakeChat) -> None:
    """Tracing off: no span is current during the call."""
    fake = SpanWatchingClient()
    make_chat(fake).post(CREATE, {"Operator_Account": "alice"})
    assert [context.is_valid for context in fake.current] == [False]


class MetadataKeeper(creation_policy_service_pb2_grpc.CreationPolicyServiceServicer):
    """Allows every creation and keeps the metadata of each call."""

    def __init__(self) -> None:
        self.metadata: list[tuple[tuple[str, str | bytes], ...]] = []

    async def CheckGroupCreation(
        self, request: cpb.CheckGroupCreationRequest, context: grpc.aio.ServicerContext
    ) -> cpb.CheckGroupCreationResponse:
        self.metadata.append(tuple(context.invocation_metadata() or ()))
        return cpb.CheckGroupCreationResponse(decision=cpb.DECISION_ALLOW)


def sent_metadata(
    add_trace_context: bool, in_span: bool, webhook: str | None = None
) -> dict[str, str | bytes]:
    """What a GrpcPolicyClient sends a real grpc.aio server on a creation check relaying
    `webhook`, called inside a span or not (checking that a traceparent names that span); the
    keys grpc adds itself (user-agent, ...) left out."""
    keeper = MetadataKeeper()
    spans = RecordedSpans()

    async def call() -> str:
        server = grpc.aio.server()
        creation_policy_service_pb2_grpc.add_CreationPolicyServiceServicer_to_server(keeper, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        client = GrpcPolicyClient(
            f"127.0.0.1:{port}",
            ChannelSecurity(),
            2000,
            with_trace_context if add_trace_context else None,
        )
        try:
            if not in_span:
                await client.check_group_creation(cpb.CheckGroupCreationRequest(), "req-1", webhook)
                return ""
            with spans.tracer.start_as_current_span("webhook") as span:
                await client.check_group_creation(cpb.CheckGroupCreationRequest(), "req-1", webhook)
            context = span.get_span_context()
            flags = int(context.trace_flags)
            return f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"
        finally:
            await client.close()
            await server.stop(None)

    traceparent = asyncio.run(call())
    [metadata] = keeper.metadata
    keys = ("x-request-id", "x-chat-policy-webhook", "traceparent")
    ours = {key: value for key, value in metadata if key in keys}
    if in_span and add_trace_context:
        assert ours["traceparent"] == traceparent
    return ours


def test_the_client_sends_the_trace_context_next_to_the_request_id() -> None:
    """Tracing on, a call made inside the webhook's span carries its traceparent beside the
    request ID."""
    assert sorted(sent_metadata(True, True)) == ["traceparent", "x-request-id"]


def test_the_client_sends_only_the_request_id_otherwise() -> None:
    """Tracing off, or no current span: x-request-id alone, as before."""
    assert sent_metadata(False, True) == {"x-request-id": "req-1"}
    assert sent_metadata(True, False) == {"x-request-id": "req-1"}


def test_a_call_for_a_webhook_names_it_next_to_the_request_id() -> None:
    """A call relaying a webhook carries its CallbackCommand as x-chat-policy-webhook, beside
    the request ID and the trace context, which stay as they are."""
    assert sent_metadata(False, True, CREATE) == {
        "x-request-id": "req-1",
        "x-chat-policy-webhook": CREATE,
    }
    assert sorted(sent_metadata(True, True, CREATE)) == [
        "traceparent",
        "x-chat-policy-webhook",
        "x-request-id",
    ]


def test_the_adapter_names_the_webhook_each_call_relays(make_chat: MakeChat) -> None:
    """Each webhook's call names its command; a replay from the spool relays none."""
    fake = FakePolicyClient()
    chat = make_chat(fake)
    chat.post(CREATE, {"Operator_Account": "alice"})
    chat.post(FULL, {"GroupId": "g", "EventTime": 1})
    request = spb.RecordGroupFullRequest(sdk_app_id=APP, group_id="g")
    event = SpooledEvent(1, "RecordGroupFull", request.SerializeToString(), "r-7", 0, 0)
    asyncio.run(replay_to(fake)(event))
    assert fake.relayed == [CREATE, FULL, None]


def test_a_replayed_event_is_a_span_of_its_own() -> None:
    """The replayer's delivery is a span, current during its Record* call, naming the method
    and the request ID of the webhook that brought the event."""
    spans = RecordedSpans()
    fake = SpanWatchingClient()
    request = spb.RecordGroupFullRequest(sdk_app_id=APP, group_id="g")
    event = SpooledEvent(1, "RecordGroupFull", request.SerializeToString(), "r-7", 0, 0)
    asyncio.run(replay_to(fake, spans.tracer)(event))
    span = spans.named(REPLAY_SPAN)
    assert dict(span.attributes or {}) == {
        "rpc.method": "RecordGroupFull",
        "chat_policy.request_id": "r-7",
    }
    assert fake.current == [span.context]
