"""OpenTelemetry traces, off unless the standard OTEL_* variables turn them on (docs/tracing.md).

On when OTEL_TRACES_EXPORTER names an exporter (`otlp`, `console`, or both, comma-separated)
or, with it unset, when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is
set (then `otlp`); OTEL_SDK_DISABLED=true keeps them off whatever else is set. The rest is
the SDK's own reading of the environment: the sampler (OTEL_TRACES_SAMPLER and _ARG), the
batch processor (OTEL_BSP_*), the exporter's endpoint, headers, TLS and timeout, the resource
(OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME, whose default is the process's own name).

When off, `start` returns None and nothing of the SDK is imported: the edges that make spans
(the adapter's app and policy client, the service's interceptor and servicers) are built
without a tracer and run no tracing code at all. When on, `start` configures the SDK in the
calling process, which must be the one that serves (a gunicorn worker after fork, never the
master: the batch processor's thread does not survive a fork), and `shut_down` flushes.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

# The instrumentation scope of every span chat-policy makes.
SCOPE = "chat_policy"
EXPORTERS = ("otlp", "console")
_PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
# How long a process that stops waits for its last spans to be exported: a live collector
# takes milliseconds, and one that does not answer must not hold up a stop (the exporter
# would retry for OTEL_EXPORTER_OTLP_TIMEOUT, 10 s by default).
SHUTDOWN_TIMEOUT_S = 2.0

_provider: TracerProvider | None = None

log = logging.getLogger(__name__)


class TracingSettingsError(ValueError):
    """An OTEL_* variable asks for something chat-policy cannot export with."""


def exporters(environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """The span exporters the environment asks for; () when tracing is off.

    Raises TracingSettingsError for an exporter or an OTLP protocol that is not shipped
    (OTLP over gRPC is; http/protobuf is not), so that a process refuses to start rather
    than running untraced by surprise.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    named = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if named:
        wanted = tuple(dict.fromkeys(name.strip() for name in named.split(",") if name.strip()))
        if wanted == ("none",):
            return ()
        unknown = [name for name in wanted if name not in EXPORTERS]
        if unknown:
            raise TracingSettingsError(
                f"OTEL_TRACES_EXPORTER={named!r}: chat-policy exports spans with"
                f" {' or '.join(EXPORTERS)} (or none), not {', '.join(unknown)}"
            )
    elif environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    ):
        wanted = ("otlp",)
    else:
        return ()
    if "otlp" in wanted:
        for variable in _PROTOCOL_VARIABLES:
            protocol = environ.get(variable, "").strip().lower()
            if protocol:
                if protocol != "grpc":
                    raise TracingSettingsError(
                        f"{variable}={protocol!r}: chat-policy exports OTLP over gRPC only"
                        " (grpc, the default); point it at the collector's gRPC port (4317)"
                    )
                break
    return wanted


def start(service_name: str, environ: Mapping[str, str] = os.environ) -> Tracer | None:
    """Configure tracing for this process as the environment asks: the tracer to make spans
    with, or None when tracing is off (and the SDK is not imported).

    `service_name` is the resource's service.name unless OTEL_SERVICE_NAME or
    OTEL_RESOURCE_ATTRIBUTES gives one. The provider becomes the global one, so that
    whatever else in the process uses the OpenTelemetry API joins the same traces.
    """
    global _provider
    wanted = exporters(environ)
    if not wanted:
        return None
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    provider = TracerProvider(resource=resource)  # the sampler: OTEL_TRACES_SAMPLER(_ARG)
    for name in wanted:
        exporter: SpanExporter
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        else:
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporter = ConsoleSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    log.info(
        "tracing on: spans of service %s exported with %s",
        resource.attributes[SERVICE_NAME],
        ", ".join(wanted),
    )
    return provider.get_tracer(SCOPE)


def shut_down(timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
    """Export the spans still queued and stop the exporters, waiting at most `timeout_s`
    (what is not exported by then is dropped, with a warning); nothing when tracing is off.

    Blocks: call it from a thread, not from an event loop that still serves."""
    global _provider
    if _provider is None:
        return
    # The SDK's own shutdown waits as long as the exporter retries; it runs in a daemon
    # thread, left behind if it takes too long (the SDK's exit hook then finds it shut down).
    stopping = threading.Thread(target=_provider.shutdown, name="tracing-shutdown", daemon=True)
    stopping.start()
    stopping.join(timeout_s)
    if stopping.is_alive():
        log.warning("tracing: spans not exported within %g s of stopping were dropped", timeout_s)
    _provider = None
