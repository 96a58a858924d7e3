"""The two headers every webhook answer carries, saying what the adapter did with it.

`X-Chat-Policy-Outcome` is the answer's outcome (allowed, refused, fail-open, fail-closed,
recorded, duplicate, spooled, acknowledged, ignored, or the lowercase failure such as
invalid_field): an HTTP 200 with ErrorCode 0 alone cannot tell a decision from a fail-open.
`X-Chat-Policy-Signature` is `checked` when CHAT_POLICY_CALLBACK_TOKENS is set, else
`unchecked`. `chat-policy simulate` reads both. This module imports nothing, so that the
command line can name the headers without loading Falcon.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import falcon.asgi

OUTCOME_HEADER = "X-Chat-Policy-Outcome"
SIGNATURE_HEADER = "X-Chat-Policy-Signature"
SIGNATURE_CHECKED, SIGNATURE_UNCHECKED = "checked", "unchecked"


class AnswerHeaders:
    """Middleware: puts both headers on every response that carries a webhook answer (the
    webhook's own, and every error handler's), success or failure."""

    def __init__(self, signature_checked: bool) -> None:
        self._signature = SIGNATURE_CHECKED if signature_checked else SIGNATURE_UNCHECKED

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        req_succeeded: bool,
    ) -> None:
        """Add the outcome and the signature state when the response is a webhook answer."""
        answer = resp.context.get("answer")
        if answer is None:
            return
        resp.set_header(OUTCOME_HEADER, answer.outcome)
        resp.set_header(SIGNATURE_HEADER, self._signature)
