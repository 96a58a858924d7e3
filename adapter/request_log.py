"""Request-ID middleware: one canonical log line per request, with its request ID."""

from __future__ import annotations

import logging
import time

import falcon.asgi

from chat_policy_shared.logs import REQUEST_ID_HEADER, accepted_request_id, request_id

log = logging.getLogger("adapter.request")


class RequestLog:
    """Takes X-Request-ID (or makes one), echoes it, and logs the request once it is answered.

    While the request is served every log line carries its ID. The canonical line never
    carries the query string, so no Sign or token reaches the log. For a relayed webhook it
    is the one INFO line of both processes, so it carries what the policy service answered
    (Answer.log_fields: the decision of a creation check), which comes from the policy,
    never from the query string.
    """

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Bind the request ID and start the clock."""
        req.context.request_id = accepted_request_id(req.get_header(REQUEST_ID_HEADER))
        req.context.request_id_token = request_id.set(req.context.request_id)
        req.context.command = ""
        req.context.started = time.perf_counter()

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        req_succeeded: bool,
    ) -> None:
        """Echo the request ID and write the canonical line."""
        resp.set_header(REQUEST_ID_HEADER, req.context.request_id)
        answer = resp.context.get("answer")
        fields = {
            "request_id": req.context.request_id,
            "method": req.method,
            "path": req.path,
            "command": req.context.command or None,
            "status": resp.status_code,
            "error_code": answer.error_code if answer else None,
            "outcome": answer.outcome if answer else None,
            "latency_ms": round((time.perf_counter() - req.context.started) * 1000, 2),
        }
        if answer is not None and answer.log_fields:
            fields.update(answer.log_fields)
        log.info("%s %s answered %s", req.method, req.path, resp.status_code, extra=fields)
        token = req.context.get("request_id_token")
        if token is not None:
            request_id.reset(token)
