"""Chat's side of the adapter tests: the app with a fake policy client, and reading its answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import falcon.testing
import grpc

from adapter.policy_client import RecordRequest
from adapter.spool import Spool
from chatpolicy.v1 import creation_policy_service_pb2 as cpb

APP = 1400000000


class FakeRpcError(grpc.RpcError):
    """A failed call as grpc raises it: a code and details."""

    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@dataclass
class FakePolicyClient:
    """Records each request and request ID, and the webhook each call relays; answers with
    `response` or raises `error`."""

    creation: cpb.CheckGroupCreationResponse = field(
        default_factory=lambda: cpb.CheckGroupCreationResponse(decision=cpb.DECISION_ALLOW)
    )
    applied: bool = True
    error: Exception | None = None
    calls: list[tuple[Any, str]] = field(default_factory=list)
    relayed: list[str | None] = field(default_factory=list)
    health: str = "SERVING"
    health_error: Exception | None = None
    health_checks: list[float] = field(default_factory=list)  # the timeout of each check

    async def check_group_creation(
        self,
        request: cpb.CheckGroupCreationRequest,
        request_id: str,
        webhook: str | None = None,
    ) -> cpb.CheckGroupCreationResponse:
        self.calls.append((request, request_id))
        self.relayed.append(webhook)
        if self.error:
            raise self.error
        return self.creation

    async def record(
        self, request: RecordRequest, request_id: str, webhook: str | None = None
    ) -> bool:
        self.calls.append((request, request_id))
        self.relayed.append(webhook)
        if self.error:
            raise self.error
        return self.applied

    async def check_health(self, timeout_s: float) -> str:
        self.health_checks.append(timeout_s)
        if self.health_error:
            raise self.health_error
        return self.health


@dataclass
class Chat:
    """Posts webhooks to the app the way Chat does."""

    client: falcon.testing.TestClient
    fake: FakePolicyClient
    spool: Spool
    path: str = "/"

    def post(
        self,
        command: str,
        body: dict[str, object] | bytes | None = None,
        headers: dict[str, str] | None = None,
        remote_addr: str | None = None,
        **params: str | None,
    ) -> falcon.testing.Result:
        """POST `body` (a dict becomes JSON with CallbackCommand added) for `command`."""
        if isinstance(body, dict):
            body = json.dumps({"CallbackCommand": command, **body}).encode()
        query = {"SdkAppid": str(APP), "CallbackCommand": command, "contenttype": "json"}
        query.update(params)
        return self.client.simulate_post(
            self.path,
            params={key: value for key, value in query.items() if value is not None},
            body=body if body is not None else b"{}",
            headers=headers,
            remote_addr=remote_addr,
        )


MakeChat = Callable[..., Chat]


def answer(result: falcon.testing.Result) -> dict[str, object]:
    """The JSON answer, checked to have exactly Chat's three fields."""
    document = json.loads(result.content)
    assert list(document) == ["ActionStatus", "ErrorCode", "ErrorInfo"]
    return dict(document)
