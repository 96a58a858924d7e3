"""X-Chat-Policy-Outcome and X-Chat-Policy-Signature on every webhook answer, success or
failure, as `chat-policy simulate` reads them."""

from __future__ import annotations

import ipaddress
import json
import time
from typing import Any

import grpc
import pytest

from adapter.settings import OnPolicyError
from adapter.signature import compute_sign
from chatpolicy.v1 import creation_policy_service_pb2 as cpb
from tests.adapter.chat import FakePolicyClient, FakeRpcError, MakeChat
from tests.chat_samples import BEFORE_CREATE_SAMPLE

BEFORE = "Group.CallbackBeforeCreateGroup"
FULL = "Group.CallbackAfterGroupFull"
JOIN = "Group.CallbackAfterNewMemberJoin"
TOKEN = "tok1"
DOWN = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down")
REFUSED = cpb.CheckGroupCreationResponse(
    decision=cpb.DECISION_DENY, error_code=10101, error_info="no"
)


def signed() -> dict[str, str]:
    """Sign and RequestTime for TOKEN, now."""
    request_time = str(int(time.time()))
    return {"Sign": compute_sign(TOKEN, request_time), "RequestTime": request_time}


def headers(result: object) -> tuple[int, str | None, str | None]:
    """The HTTP status and the two headers of a falcon.testing result."""
    return (
        result.status_code,  # type: ignore[attr-defined]
        result.headers.get("X-Chat-Policy-Outcome"),  # type: ignore[attr-defined]
        result.headers.get("X-Chat-Policy-Signature"),  # type: ignore[attr-defined]
    )


@pytest.mark.parametrize(
    ("fake", "settings", "command", "body", "expected"),
    [
        ({}, {}, BEFORE, BEFORE_CREATE_SAMPLE, (200, "allowed")),
        ({"creation": REFUSED}, {}, BEFORE, BEFORE_CREATE_SAMPLE, (200, "refused")),
        ({"error": DOWN}, {}, BEFORE, BEFORE_CREATE_SAMPLE, (200, "fail-open")),
        (
            {"error": DOWN},
            {"on_policy_error": OnPolicyError.DENY},
            BEFORE,
            BEFORE_CREATE_SAMPLE,
            (200, "fail-closed"),
        ),
        ({}, {}, FULL, {"GroupId": "g"}, (200, "recorded")),
        ({"applied": False}, {}, FULL, {"GroupId": "g"}, (200, "duplicate")),
        ({"error": DOWN}, {}, FULL, {"GroupId": "g"}, (200, "spooled")),
        ({}, {}, JOIN, {"GroupId": "g"}, (200, "acknowledged")),
        ({}, {}, "Group.CallbackAfterSendMsg", {}, (200, "ignored")),
        ({}, {}, FULL, {"GroupId": 3}, (400, "invalid_field")),
        ({}, {"max_body_bytes": 10}, FULL, {"GroupId": "g"}, (413, "body_too_large")),
        ({"error": ValueError("bug")}, {}, FULL, {"GroupId": "g"}, (500, "internal")),
    ],
)
@pytest.mark.parametrize("signature", ["checked", "unchecked"])
def test_every_answer_names_its_outcome_and_whether_signatures_are_checked(
    make_chat: MakeChat,
    fake: dict[str, Any],
    settings: dict[str, Any],
    command: str,
    body: dict[str, object],
    expected: tuple[int, str],
    signature: str,
) -> None:
    """Each outcome, success or failure, is in X-Chat-Policy-Outcome; X-Chat-Policy-Signature
    says `checked` when callback tokens are set, `unchecked` when not."""
    tokens = (TOKEN,) if signature == "checked" else ()
    chat = make_chat(FakePolicyClient(**fake), callback_tokens=tokens, **settings)
    document = {k: v for k, v in body.items() if k != "CallbackCommand"}

    result = chat.post(command, document, **(signed() if tokens else {}))

    assert headers(result) == (*expected, signature)


def test_refused_signatures_and_unknown_apps_carry_the_headers(make_chat: MakeChat) -> None:
    """A 401 for a wrong Sign and a 403 for an SdkAppid not accepted carry both headers."""
    chat = make_chat(callback_tokens=(TOKEN,))

    wrong_sign = chat.post(FULL, {"GroupId": "g"}, Sign="0" * 64, RequestTime=str(int(time.time())))
    other_app = chat.post(FULL, {"GroupId": "g"}, SdkAppid="1", **signed())

    assert headers(wrong_sign) == (401, "unauthenticated", "checked")
    assert headers(other_app) == (403, "unknown_sdkappid", "checked")


def test_the_source_check_the_wrong_path_and_method_carry_the_headers(
    make_chat: MakeChat,
) -> None:
    """A refused source address (403), another path (404) and a GET (405) carry both headers."""
    chat = make_chat(allowed_sources=(ipaddress.ip_network("192.0.2.0/24"),))

    refused = chat.post(FULL, {"GroupId": "g"}, remote_addr="198.51.100.7")
    chat.path = "/elsewhere"
    elsewhere = chat.post(FULL, {"GroupId": "g"})
    got = chat.client.simulate_get("/")

    assert headers(refused) == (403, "source_not_allowed", "unchecked")
    assert headers(elsewhere) == (404, "not_found", "unchecked")
    assert headers(got) == (405, "method_not_allowed", "unchecked")
    assert json.loads(got.content)["ErrorCode"] == 405


def test_probes_carry_no_webhook_headers(make_chat: MakeChat) -> None:
    """/healthz is no webhook answer: it carries neither header."""
    result = make_chat().client.simulate_get("/healthz")

    assert headers(result) == (200, None, None)
