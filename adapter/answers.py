"""The one table from every way a webhook can fail to the HTTP status and JSON Chat receives.

Chat reads `ActionStatus`, `ErrorCode` and `ErrorInfo`. Success, and a refused group creation,
are HTTP 200 with `ActionStatus` "OK". Every failure below answers `ActionStatus` "FAIL" with
`ErrorCode` equal to the HTTP status, so it can never be mistaken for a refusal code (1 or
10100-10200), and an `ErrorInfo` that says what was wrong.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass

import grpc


class Failure(enum.Enum):
    """Every way a webhook can fail, each with its HTTP status and what Chat is told."""

    SOURCE_NOT_ALLOWED = (403, "webhooks are not accepted from this address")
    UNAUTHENTICATED = (401, "webhook signature rejected")
    UNKNOWN_SDKAPPID = (403, "SdkAppid is not accepted here")
    NOT_FOUND = (404, "no webhook endpoint at this path")
    METHOD_NOT_ALLOWED = (405, "webhooks are POSTed")
    BODY_TOO_LARGE = (413, "request body is too large")
    REQUEST_TIMEOUT = (408, "the request was not received in time")
    HEADERS_TOO_LARGE = (431, "the request line and headers are too large")
    TOO_MANY_CONNECTIONS = (503, "the adapter has too many open connections; retry later")
    MALFORMED_REQUEST = (400, "malformed webhook request")
    INVALID_FIELD = (400, "invalid webhook field")
    POLICY_REJECTED = (400, "the policy service rejected the webhook")
    POLICY_UNAVAILABLE = (503, "the policy service is unavailable; retry later")
    POLICY_FAILED = (502, "the policy service failed")
    SPOOL_FULL = (503, "the policy service is unavailable and the event spool is full")
    SPOOL_UNAVAILABLE = (503, "the policy service is unavailable and the event spool failed")
    INTERNAL = (500, "internal error in the adapter")

    @property
    def http_status(self) -> int:
        """The HTTP status code of this failure."""
        return self.value[0]

    @property
    def summary(self) -> str:
        """The start of ErrorInfo for this failure."""
        return self.value[1]


# gRPC status of a failed policy call -> failure. Codes not listed are POLICY_FAILED.
GRPC_FAILURES = {
    grpc.StatusCode.INVALID_ARGUMENT: Failure.POLICY_REJECTED,
    grpc.StatusCode.UNAVAILABLE: Failure.POLICY_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: Failure.POLICY_UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Failure.POLICY_UNAVAILABLE,
    grpc.StatusCode.CANCELLED: Failure.POLICY_UNAVAILABLE,
}


class WebhookError(Exception):
    """A webhook that cannot be answered with success; `detail` is safe to show the caller,
    `reason` (optional) says in one word what exactly failed, for the metrics."""

    def __init__(self, failure: Failure, detail: str = "", reason: str | None = None) -> None:
        super().__init__(f"{failure.summary}: {detail}" if detail else failure.summary)
        self.failure = failure
        self.detail = detail
        self.reason = reason


@dataclass(frozen=True)
class Answer:
    """An HTTP status, the Chat JSON body that goes with it, and a word for the log line;
    `log_fields` (optional): what the policy service answered, for the log line too."""

    http_status: int
    body: bytes
    error_code: int
    outcome: str
    log_fields: Mapping[str, object] | None = None


def chat_json(action_status: str, error_code: int, error_info: str) -> bytes:
    """Chat's answer body: exactly the three fields, compact, UTF-8."""
    document = {"ActionStatus": action_status, "ErrorCode": error_code, "ErrorInfo": error_info}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


_OK_BODY = chat_json("OK", 0, "")


def ok(outcome: str, log_fields: Mapping[str, object] | None = None) -> Answer:
    """Success: HTTP 200, ActionStatus OK, ErrorCode 0; `outcome` says what happened."""
    return Answer(200, _OK_BODY, 0, outcome, log_fields)


def is_refusal_code(code: int) -> bool:
    """True for the ErrorCodes Chat reads as a refused creation: 1, or 10100 to 10200."""
    return code == 1 or 10100 <= code <= 10200


def refusal(
    error_code: int, error_info: str, log_fields: Mapping[str, object] | None = None
) -> Answer:
    """A group creation refused by policy: HTTP 200, ActionStatus OK, Chat's refusal code."""
    body = chat_json("OK", error_code, error_info)
    return Answer(200, body, error_code, "refused", log_fields)


def failure_answer(error: WebhookError) -> Answer:
    """The answer for a failed webhook, from the table."""
    status = error.failure.http_status
    return Answer(status, chat_json("FAIL", status, str(error)), status, error.failure.name.lower())


def grpc_failure(error: grpc.RpcError) -> WebhookError:
    """The webhook failure for a failed policy call.

    Only a rejection's message (which names the field at fault) is passed on: other messages
    may describe the internal network, which is no business of the caller.
    """
    code = error.code()
    failure = GRPC_FAILURES.get(code, Failure.POLICY_FAILED)
    if failure is Failure.POLICY_REJECTED:
        return WebhookError(failure, f"{code.name}: {error.details()}")
    return WebhookError(failure, code.name)
