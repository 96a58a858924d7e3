"""A server span per webhook (OpenTelemetry), made only when tracing is on (docs/tracing.md).

The span is the current one while the webhook is served, so that the policy client puts its
context on the gRPC call (`traceparent` next to `x-request-id`) and the policy service's spans
join the same trace. Chat sends no trace context, and none is taken from the request: a
webhook's span is the root of its trace, and nobody outside chooses what is sampled.
"""

from __future__ import annotations

import falcon.asgi
from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer


class WebhookSpans:
    """Falcon middleware: a SERVER span around each request to the webhook path, carrying the
    HTTP method, route and status, the CallbackCommand, the SdkAppid (once accepted), the
    answer's outcome (as in the metrics) and the request ID."""

    def __init__(self, tracer: Tracer, webhook_path: str) -> None:
        self._tracer = tracer
        self._path = webhook_path

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Start the webhook's span and make it the current one."""
        if req.path != self._path:
            return
        span = self._tracer.start_span(
            f"{req.method} {self._path}",
            kind=SpanKind.SERVER,
            attributes={"http.request.method": req.method, "http.route": self._path},
        )
        req.context.span = span
        req.context.span_token = context.attach(trace.set_span_in_context(span))

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        req_succeeded: bool,
    ) -> None:
        """Describe the answer on the span and end it."""
        span: trace.Span | None = req.context.get("span")
        if span is None:
            return
        status = resp.status_code
        answer = resp.context.get("answer")
        attributes = {
            "http.response.status_code": status,
            "chat_policy.command": req.context.get("command") or "",
            "chat_policy.request_id": req.context.get("request_id") or "",
            "chat_policy.outcome": answer.outcome if answer else "",
        }
        sdk_app_id = req.context.get("sdk_app_id")
        if sdk_app_id is not None:
            attributes["chat_policy.sdk_app_id"] = sdk_app_id
        span.set_attributes(attributes)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR, answer.outcome if answer else str(status)))
        span.end()
        context.detach(req.context.span_token)
