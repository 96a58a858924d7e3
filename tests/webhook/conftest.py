"""The real Falcon app with a fake policy client at the named seam (adapter.policy_client)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import falcon.testing
import grpc
import pytest

from adapter.app import create_app
from adapter.settings import AdapterSettings
from chatpolicy.v1 import creation_policy_service_pb2 as cpb
from chatpolicy.v1 import group_state_service_pb2 as spb

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
    """Records each request and request ID; answers with `response` or raises `error`."""

    creation: cpb.CheckGroupCreationResponse = field(
        default_factory=lambda: cpb.CheckGroupCreationResponse(decision=cpb.DECISION_ALLOW)
    )
    group_full: spb.RecordGroupFullResponse = field(
        default_factory=lambda: spb.RecordGroupFullResponse(applied=True)
    )
    error: Exception | None = None
    calls: list[tuple[Any, str]] = field(default_factory=list)

    def check_group_creation(
        self, request: cpb.CheckGroupCreationRequest, request_id: str
    ) -> cpb.CheckGroupCreationResponse:
        self.calls.append((request, request_id))
        if self.error:
            raise self.error
        return self.creation

    def record_group_full(
        self, request: spb.RecordGroupFullRequest, request_id: str
    ) -> spb.RecordGroupFullResponse:
        self.calls.append((request, request_id))
        if self.error:
            raise self.error
        return self.group_full


@dataclass
class Chat:
    """Posts webhooks to the app the way Chat does."""

    client: falcon.testing.TestClient
    fake: FakePolicyClient
    path: str = "/"

    def post(
        self,
        command: str,
        body: dict[str, object] | bytes | None = None,
        headers: dict[str, str] | None = None,
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
        )


MakeChat = Callable[..., Chat]


@pytest.fixture
def make_chat() -> MakeChat:
    """Build the app from settings overrides and a fake; return a Chat posting to it."""

    def make(fake: FakePolicyClient | None = None, **overrides: Any) -> Chat:
        settings = AdapterSettings(
            **{"sdk_app_ids": frozenset({APP}), "sdk_app_ids_configured": True, **overrides}
        )
        fake = fake or FakePolicyClient()
        client = falcon.testing.TestClient(create_app(settings, fake))
        return Chat(client, fake, settings.webhook_path)

    return make


@pytest.fixture
def chat(make_chat: MakeChat) -> Chat:
    """The app with default settings, auth off."""
    return make_chat()


def answer(result: falcon.testing.Result) -> dict[str, object]:
    """The JSON answer, checked to have exactly Chat's three fields."""
    document = json.loads(result.content)
    assert list(document) == ["ActionStatus", "ErrorCode", "ErrorInfo"]
    return dict(document)
