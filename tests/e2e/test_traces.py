"""One trace across both processes: the adapter's webhook span, and the policy service's RPC
span with its decision or store write, exported over OTLP to a collector in the test."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from bench.processes import exited
from tests.chat_samples import BEFORE_CREATE_SAMPLE, GROUP_FULL_SAMPLE, OK
from tests.e2e.deployment import Deployment
from tests.e2e.otlp_collector import Collector, ExportedSpan
from tests.e2e.webhook_requests import SDKAPPID, body, query
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

CHECK = "chatpolicy.v1.CreationPolicyService/CheckGroupCreation"
RECORD = "chatpolicy.v1.GroupStateService/RecordGroupFull"
SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER
EXPORT_TIMEOUT_S = 20.0


@pytest.fixture
def collector() -> Iterator[Collector]:
    """An OTLP collector on a free loopback port."""
    with Collector() as running:
        yield running


def traced(deployment: Deployment, collector: Collector, delay_ms: int) -> Deployment:
    """Start the service and the adapter exporting to the collector, batches sent every
    delay_ms."""
    deployment.env.update(
        CHAT_POLICY_SDKAPPIDS=str(SDKAPPID),
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
        OTEL_BSP_SCHEDULE_DELAY=str(delay_ms),
    )
    deployment.start_service()
    deployment.start_adapter()
    return deployment


def one(collector: Collector, name: str) -> ExportedSpan:
    """The one span called `name` the collector has, once it has arrived."""
    wait_for(lambda: len(collector.named(name)) >= 1, EXPORT_TIMEOUT_S, f"a span {name}")
    [span] = collector.named(name)
    return span


def test_a_creation_webhook_is_one_trace_across_both_processes(
    deployment: Deployment, collector: Collector
) -> None:
    """The service's RPC span is the child of the adapter's webhook span, in the same trace,
    and the decision is the RPC span's child."""
    traced(deployment, collector, delay_ms=50)
    status, answer = deployment.post(
        query("Group.CallbackBeforeCreateGroup"),
        body(BEFORE_CREATE_SAMPLE, EventTime=1670574414123),
        headers={"X-Request-ID": "trace-e2e-1"},
    )
    assert (status, answer) == (200, OK)
    webhook = one(collector, "POST /")
    rpc = one(collector, CHECK)
    decision = one(collector, "chat_policy.decide")
    assert webhook.service == "chat-policy-adapter"
    assert rpc.service == decision.service == "chat-policy-service"
    assert webhook.parent_span_id == ""
    assert webhook.kind == rpc.kind == SERVER_KIND
    assert rpc.trace_id == webhook.trace_id and rpc.parent_span_id == webhook.span_id
    assert decision.trace_id == rpc.trace_id and decision.parent_span_id == rpc.span_id
    assert webhook.attributes["chat_policy.command"] == "Group.CallbackBeforeCreateGroup"
    assert webhook.attributes["chat_policy.sdk_app_id"] == SDKAPPID
    assert webhook.attributes["chat_policy.outcome"] == "allowed"
    assert webhook.attributes["http.response.status_code"] == 200
    assert webhook.attributes["chat_policy.request_id"] == "trace-e2e-1"
    assert rpc.attributes["chat_policy.request_id"] == "trace-e2e-1"
    assert rpc.attributes["rpc.grpc.status_code"] == 0
    assert decision.attributes["chat_policy.decision"] == "allow"
    assert decision.attributes["chat_policy.dry_run"] is False


def test_spans_still_queued_are_exported_when_the_processes_stop(
    deployment: Deployment, collector: Collector
) -> None:
    """With batches sent only every 10 minutes, an after-event's spans arrive anyway when
    both processes stop: each flushes at shutdown. The store write is the RPC's child."""
    traced(deployment, collector, delay_ms=600_000)
    status, answer = deployment.post(
        query("Group.CallbackAfterGroupFull"), body(GROUP_FULL_SAMPLE, EventTime=1670574414123)
    )
    assert (status, answer) == (200, OK)
    assert collector.spans() == []
    for process in reversed(deployment.processes):  # the adapter first, as `run` stops them
        os.kill(process.pid, signal.SIGTERM)
        assert exited(process.pid, 15), "a process did not stop within 15 s"
    webhook = one(collector, "POST /")
    rpc = one(collector, RECORD)
    write = one(collector, "chat_policy.store.record")
    assert webhook.attributes["chat_policy.outcome"] == "recorded"
    assert rpc.trace_id == webhook.trace_id and rpc.parent_span_id == webhook.span_id
    assert write.trace_id == rpc.trace_id and write.parent_span_id == rpc.span_id
    assert write.attributes["chat_policy.applied"] is True
