"""Spans in tests: a tracer whose finished spans an in-memory exporter keeps."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from chat_policy_shared.tracing import SCOPE


class RecordedSpans:
    """A tracer of its own (not the global provider's) and the spans it finished."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer: Tracer = provider.get_tracer(SCOPE)

    def finished(self) -> list[ReadableSpan]:
        """Every span ended so far, in the order they ended."""
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> ReadableSpan:
        """The one finished span called `name`."""
        spans = [span for span in self.finished() if span.name == name]
        assert len(spans) == 1, [span.name for span in self.finished()]
        return spans[0]
