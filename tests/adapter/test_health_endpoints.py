"""GET /healthz and GET /readyz on the real app, with a fake policy client at the seam."""

from __future__ import annotations

import json

import grpc
import pytest

from adapter.health import READINESS_DEADLINE_S
from tests.adapter.chat import FakePolicyClient, FakeRpcError, MakeChat, answer
from tests.chat_samples import OK

GROUP_FULL = "Group.CallbackAfterGroupFull"


def document(content: bytes) -> dict[str, object]:
    """The JSON object of a probe's answer."""
    parsed = json.loads(content)
    assert isinstance(parsed, dict)
    return parsed


@pytest.mark.parametrize("webhook_path", ["/", "/chat/callback"])
def test_healthz_is_alive_without_asking_the_policy_service(
    make_chat: MakeChat, webhook_path: str
) -> None:
    """/healthz answers 200 alive even when every policy call would fail, and makes none."""
    fake = FakePolicyClient(
        error=FakeRpcError(grpc.StatusCode.UNAVAILABLE),
        health_error=FakeRpcError(grpc.StatusCode.UNAVAILABLE),
    )
    chat = make_chat(fake, webhook_path=webhook_path)
    result = chat.client.simulate_get("/healthz")
    assert result.status_code == 200
    assert result.headers["content-type"] == "application/json"
    assert document(result.content) == {"status": "alive"}
    assert fake.calls == [] and fake.health_checks == []


@pytest.mark.parametrize("webhook_path", ["/", "/chat/callback"])
def test_readyz_is_ready_when_the_service_is_serving(
    make_chat: MakeChat, webhook_path: str
) -> None:
    """/readyz answers 200 ready after one health check with a deadline well under a second."""
    chat = make_chat(webhook_path=webhook_path)
    result = chat.client.simulate_get("/readyz")
    assert result.status_code == 200
    assert document(result.content) == {"status": "ready"}
    assert chat.fake.health_checks == [READINESS_DEADLINE_S]
    assert 0 < READINESS_DEADLINE_S <= 0.5
    assert chat.fake.calls == []


@pytest.mark.parametrize("status", ["NOT_SERVING", "SERVICE_UNKNOWN", "UNKNOWN"])
def test_readyz_names_a_status_other_than_serving(make_chat: MakeChat, status: str) -> None:
    """A service that answers with any status but SERVING makes /readyz 503 naming it."""
    chat = make_chat(FakePolicyClient(health=status))
    result = chat.client.simulate_get("/readyz")
    assert result.status_code == 503
    assert result.headers["content-type"] == "application/json"
    assert document(result.content) == {"status": "not ready", "reason": status}


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (grpc.StatusCode.UNAVAILABLE, "unreachable"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "deadline"),
        (grpc.StatusCode.UNIMPLEMENTED, "UNIMPLEMENTED"),
    ],
)
def test_readyz_names_a_failed_check(
    make_chat: MakeChat, code: grpc.StatusCode, reason: str
) -> None:
    """A health check that fails makes /readyz 503: unreachable, deadline, or the code's name."""
    chat = make_chat(FakePolicyClient(health_error=FakeRpcError(code, "details")))
    result = chat.client.simulate_get("/readyz")
    assert result.status_code == 503
    assert document(result.content) == {"status": "not ready", "reason": reason}


def test_probes_answer_get_only_and_webhooks_stay_as_they_are(make_chat: MakeChat) -> None:
    """POST to a probe is 405 in Chat's shape; a webhook at "/" is answered as before."""
    chat = make_chat()
    for path in ("/healthz", "/readyz"):
        refused = chat.client.simulate_post(path, body=b"{}")
        assert refused.status_code == 405
        assert answer(refused)["ActionStatus"] == "FAIL"
    assert chat.client.simulate_get("/").status_code == 405
    webhook = chat.post(GROUP_FULL, {"GroupId": "g1", "EventTime": 1})
    assert (webhook.status_code, webhook.content) == (200, OK)
    assert chat.fake.health_checks == []
