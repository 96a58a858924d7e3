"""The webhook endpoint: authenticate, read the body, route on CallbackCommand to a family."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import falcon
import falcon.asgi

from adapter.answers import Answer, Failure, WebhookError, ok
from adapter.payload import checked_text, parse_body
from adapter.settings import AdapterSettings
from adapter.signature import SignatureError, verify_sign
from adapter.source import client_address, contains
from chat_policy_shared.field_limits import MAX_SHORT_TEXT_BYTES

log = logging.getLogger(__name__)

# Distinct unhandled command names counted per worker (with auth off, anyone can invent them).
MAX_COUNTED_COMMANDS = 1000


@dataclass(frozen=True)
class Webhook:
    """An authenticated webhook: who sent it, which command, its body and when it arrived."""

    sdk_app_id: int
    command: str
    body: Mapping[str, object]
    client_ip: str
    opt_platform: str
    request_id: str
    received_ms: int


class WebhookFamily(Protocol):
    """Handles the commands of one webhook family (group creation, group state, ...)."""

    async def handle(self, webhook: Webhook) -> Answer:
        """Answer one webhook, raising WebhookError for a failure."""
        ...


class WebhookResource:
    """POST endpoint for every Chat webhook; unknown commands are acknowledged and ignored."""

    def __init__(
        self,
        settings: AdapterSettings,
        families: Mapping[str, WebhookFamily],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._families = families
        self._clock = clock
        self._ignored: Counter[str] = Counter()  # one event loop per worker: no lock

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Answer one webhook with Chat's JSON."""
        now_s = self._clock()
        self._check_source(req)
        self._authenticate(req, now_s)
        sdk_app_id = self._sdk_app_id(req)
        req.context.sdk_app_id = sdk_app_id
        command = req.get_param("CallbackCommand") or ""
        req.context.command = command
        if not command:
            raise WebhookError(Failure.MALFORMED_REQUEST, "CallbackCommand is required")
        body = parse_body(await self._read_body(req))
        if body.get("CallbackCommand", command) != command:
            raise WebhookError(
                Failure.MALFORMED_REQUEST, "body CallbackCommand differs from the query's"
            )
        family = self._families.get(command)
        if family is None:
            answer = self._ignore(command)
        else:
            answer = await family.handle(
                Webhook(
                    sdk_app_id=sdk_app_id,
                    command=command,
                    body=body,
                    client_ip=_passed_on(req, "ClientIP"),
                    opt_platform=_passed_on(req, "OptPlatform"),
                    request_id=req.context.request_id,
                    received_ms=int(now_s * 1000),
                )
            )
        write_answer(resp, answer)

    def _check_source(self, req: falcon.asgi.Request) -> None:
        allowed = self._settings.allowed_sources
        if not allowed:
            return
        address = client_address(
            req.remote_addr, req.get_header("X-Forwarded-For"), self._settings.trusted_proxies
        )
        if address is None or not contains(allowed, address):
            raise WebhookError(Failure.SOURCE_NOT_ALLOWED, f"source {address or 'unknown'}")

    def _authenticate(self, req: falcon.asgi.Request, now_s: float) -> None:
        if not self._settings.auth_enabled:
            return
        try:
            verify_sign(
                self._settings.callback_tokens,
                req.get_param("Sign"),
                req.get_param("RequestTime"),
                now_s,
                self._settings.sign_tolerance_s,
            )
        except SignatureError as error:
            raise WebhookError(Failure.UNAUTHENTICATED, str(error), error.reason) from None

    def _sdk_app_id(self, req: falcon.asgi.Request) -> int:
        raw = req.get_param("SdkAppid") or ""
        if (
            not (raw.isascii() and raw.isdigit() and len(raw) <= 20)
            or int(raw) not in self._settings.sdk_app_ids
        ):
            raise WebhookError(Failure.UNKNOWN_SDKAPPID, f"SdkAppid {raw[:32]!r}" if raw else "")
        return int(raw)

    async def _read_body(self, req: falcon.asgi.Request) -> bytes:
        limit = self._settings.max_body_bytes
        if req.content_length is None or req.content_length <= limit:
            # A chunked body (no Content-Length) arrives decoded by the server; reading stops
            # one byte past the limit either way.
            raw: bytes = await req.stream.read(limit + 1)
            if len(raw) <= limit:
                return raw
        raise WebhookError(Failure.BODY_TOO_LARGE, f"the limit is {limit} bytes")

    def _ignore(self, command: str) -> Answer:
        """Acknowledge a command no family handles; count it and log it at 1, 10, 100, ... times."""
        if command in self._ignored or len(self._ignored) < MAX_COUNTED_COMMANDS:
            self._ignored[command] += 1
            count = self._ignored[command]
            if count == 10 ** (len(str(count)) - 1):
                log.info(
                    "acknowledged webhook command %r without acting on it (count in this"
                    " worker: %d)",
                    command,
                    count,
                )
        return ok("ignored")


def _passed_on(req: falcon.asgi.Request, name: str) -> str:
    """A query parameter passed on to the policy service; empty when absent."""
    return checked_text(req.get_param(name) or "", name, MAX_SHORT_TEXT_BYTES)


def write_answer(resp: falcon.asgi.Response, answer: Answer) -> None:
    """Put an answer on the response, and its outcome where the request log finds it."""
    resp.status = answer.http_status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = answer.body
    resp.context.answer = answer
