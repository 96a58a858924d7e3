"""Tracing is off unless the standard OTEL_* variables turn it on, and then continues across
the gRPC hop through the call's metadata."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from opentelemetry import trace

from chat_policy_shared.logs import REQUEST_ID_METADATA
from chat_policy_shared.trace_context import trace_context_of, with_trace_context
from chat_policy_shared.tracing import TracingSettingsError, exporters
from tests.spans import RecordedSpans


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, ()),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, ()),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": " Console , otlp,console"}, ("console", "otlp")),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, ()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, ()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_SDK_DISABLED": "TRUE"}, ()),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, ("otlp",)),
        (
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",  # the traces' own one wins
            },
            ("otlp",),
        ),
    ],
)
def test_exporters_follow_the_standard_variables(
    environ: dict[str, str], expected: tuple[str, ...]
) -> None:
    """An exporter named, or an OTLP endpoint set, turns tracing on; OTEL_SDK_DISABLED or
    `none` keeps it off; nothing set is off."""
    assert exporters(environ) == expected


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_EXPORTER": "otlp,jaeger"}, "jaeger"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    ],
)
def test_what_cannot_be_exported_is_refused(environ: dict[str, str], named: str) -> None:
    """An exporter or protocol that is not shipped is an error naming it, not silence."""
    with pytest.raises(TracingSettingsError, match=named):
        exporters(environ)


def run_python(code: str, environ: dict[str, str]) -> str:
    """Run `code` in a new interpreter (the global tracer provider is set once per process)
    with only `environ` of the OTEL_* variables; its stdout."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env={"PATH": "/usr/bin:/bin", **environ},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


START_AND_SAY = """
import json, sys
from chat_policy_shared import tracing
tracer = tracing.start("chat-policy-test")
loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry"))
service = None
if tracer is not None:
    from opentelemetry import trace
    service = trace.get_tracer_provider().resource.attributes["service.name"]
    with tracer.start_as_current_span("one"):
        pass
tracing.shut_down()
print(json.dumps({"on": tracer is not None, "loaded": loaded, "service": service}))
"""


def said(output: str) -> dict[str, object]:
    """The JSON line START_AND_SAY printed last (a console exporter prints before it)."""
    result: dict[str, object] = json.loads(output.strip().splitlines()[-1])
    return result


def test_off_loads_nothing_of_opentelemetry() -> None:
    """With no OTEL_* variable, start returns None and not even the API is imported."""
    result = said(run_python(START_AND_SAY, {}))
    assert result == {"on": False, "loaded": [], "service": None}


def test_on_names_the_service_and_exports_on_shut_down() -> None:
    """With the console exporter, the service is named by default, and the span queued in
    the batch processor is written when the process shuts tracing down."""
    output = run_python(START_AND_SAY, {"OTEL_TRACES_EXPORTER": "console"})
    result = said(output)
    assert result["on"] is True
    assert result["service"] == "chat-policy-test"
    assert '"name": "one"' in output


def test_otel_service_name_overrides_the_default() -> None:
    """OTEL_SERVICE_NAME names the service, as the SDK documents."""
    output = run_python(
        START_AND_SAY, {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "policy-eu"}
    )
    assert said(output)["service"] == "policy-eu"


def test_trace_context_rides_next_to_the_request_id() -> None:
    """The current span's traceparent is added after x-request-id, and read back it names
    that span as the remote parent."""
    spans = RecordedSpans()
    with spans.tracer.start_as_current_span("webhook") as span:
        metadata = with_trace_context(((REQUEST_ID_METADATA, "r-1"),))
    assert metadata[0] == (REQUEST_ID_METADATA, "r-1")
    assert [key for key, _ in metadata[1:]] == ["traceparent"]
    parent = trace.get_current_span(trace_context_of(metadata)).get_span_context()
    assert parent.is_remote
    assert parent.trace_id == span.get_span_context().trace_id
    assert parent.span_id == span.get_span_context().span_id


def test_outside_a_span_nothing_is_added() -> None:
    """Without a current span the metadata is left as it was, and reads as no parent."""
    metadata = with_trace_context(((REQUEST_ID_METADATA, "r-1"),))
    assert metadata == ((REQUEST_ID_METADATA, "r-1"),)
    assert not trace.get_current_span(trace_context_of(metadata)).get_span_context().is_valid


def test_a_collector_that_does_not_answer_does_not_hold_up_a_stop() -> None:
    """shut_down gives up on an exporter still retrying after its timeout, says that spans
    were dropped, and the process exits (the exporter would retry for 10 s)."""
    code = """
from bench.processes import free_port
import os
os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"  # nothing there
from chat_policy_shared import tracing
tracer = tracing.start("chat-policy-test")
with tracer.start_as_current_span("lost"):
    pass
tracing.shut_down(0.2)
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "spans not exported within 0.2 s of stopping were dropped" in result.stderr
