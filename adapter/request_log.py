"""Request-ID middleware: one canonical log line per webhook, with its request ID."""

from __future__ import annotations

import logging
import re
import time
import uuid

import falcon

REQUEST_ID_HEADER = "X-Request-ID"
_ACCEPTABLE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

log = logging.getLogger("adapter.request")


class RequestLog:
    """Takes X-Request-ID (or makes one), echoes it, and logs the request once it is answered.

    The line never carries the query string, so no Sign or token reaches the log.
    """

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Bind the request ID and start the clock."""
        given = req.get_header(REQUEST_ID_HEADER) or ""
        req.context.request_id = given if _ACCEPTABLE_ID.fullmatch(given) else uuid.uuid4().hex
        req.context.command = ""
        req.context.started = time.perf_counter()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        """Echo the request ID and write the canonical line."""
        resp.set_header(REQUEST_ID_HEADER, req.context.request_id)
        answer = resp.context.get("answer")
        log.info(
            "request_id=%s method=%s path=%s command=%s status=%s error_code=%s outcome=%s"
            " latency_ms=%.2f",
            req.context.request_id,
            req.method,
            req.path,
            req.context.command or "-",
            resp.status_code,
            answer.error_code if answer else "-",
            answer.outcome if answer else "-",
            (time.perf_counter() - req.context.started) * 1000,
        )
