"""W3C trace context (`traceparent`, `tracestate`) in gRPC metadata, next to `x-request-id`.

Imported only where tracing is on (chat_policy_shared.tracing): by the adapter's policy client
to put the current span's context on every call, and by the policy service's interceptor to
continue it. The propagators are the global ones (OTEL_PROPAGATORS; W3C trace context and
baggage by default).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter

Metadata = tuple[tuple[str, str], ...]
# What grpc.aio hands a server: (key, value) pairs, a binary header's value as bytes.
ReceivedMetadata = Iterable[tuple[str, str | bytes]]


def with_trace_context(metadata: Metadata) -> Metadata:
    """`metadata` and the current span's trace context (nothing more outside a span)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return metadata + tuple(carrier.items())


def trace_context_of(metadata: ReceivedMetadata) -> Context:
    """The caller's trace context, from a call's metadata (an empty one: a new trace)."""
    return propagate.extract(tuple(metadata), getter=_METADATA)


class _MetadataGetter(Getter[Sequence[tuple[str, str | bytes]]]):
    """Reads text metadata by its (lowercase) key."""

    def get(self, carrier: Sequence[tuple[str, str | bytes]], key: str) -> list[str] | None:
        """Every text value of `key`, or None."""
        values = [value for name, value in carrier if name == key and isinstance(value, str)]
        return values or None

    def keys(self, carrier: Sequence[tuple[str, str | bytes]]) -> list[str]:
        """Every key."""
        return [name for name, _ in carrier]


_METADATA = _MetadataGetter()
