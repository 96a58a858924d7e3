"""Refusals and the answer table: source allowlist, fail-closed creation, every failure's answer."""

from __future__ import annotations

import logging

import grpc
import pytest

from adapter.answers import GRPC_FAILURES, Failure, WebhookError, failure_answer, grpc_failure
from adapter.settings import OnPolicyError
from adapter.source import client_address, parse_address, parse_networks
from tests.adapter.chat import Chat, FakePolicyClient, FakeRpcError, MakeChat, answer
from tests.chat_samples import OK

BEFORE = "Group.CallbackBeforeCreateGroup"
FULL = "Group.CallbackAfterGroupFull"
PROXIES = parse_networks(["10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        ("203.0.113.7", "198.51.100.1", "203.0.113.7"),
        ("10.1.2.3", "198.51.100.1", "198.51.100.1"),
        ("10.1.2.3", "1.1.1.1, 198.51.100.1, 10.9.9.9", "198.51.100.1"),
        ("10.1.2.3", "10.2.2.2, 10.3.3.3", "10.2.2.2"),
        ("10.1.2.3", None, "10.1.2.3"),
        ("::ffff:10.1.2.3", "198.51.100.1", "198.51.100.1"),
        ("fd00::1", "2001:db8::5", "2001:db8::5"),
        ("10.1.2.3", "1.1.1.1, not-an-address", None),
        ("unix-socket", "198.51.100.1", None),
    ],
)
def test_client_is_the_rightmost_address_no_trusted_proxy_added(
    peer: str, forwarded_for: str | None, client: str | None
) -> None:
    """X-Forwarded-For counts only from a trusted proxy, and only back to the first stranger."""
    expected = None if client is None else parse_address(client)
    assert client_address(peer, forwarded_for, PROXIES) == expected


def test_bad_network_is_refused_by_name() -> None:
    """A list item that is no address or CIDR is a ValueError naming it."""
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33'"):
        parse_networks(["10.0.0.0/8", "10.0.0.0/33"])


def test_webhooks_from_outside_the_allowlist_are_403_and_reach_nothing(
    make_chat: MakeChat,
) -> None:
    """Only allowed sources get through; a forged X-Forwarded-For from a stranger is ignored."""
    chat = make_chat(allowed_sources=parse_networks(["198.51.100.0/24"]), trusted_proxies=PROXIES)
    forged = {"X-Forwarded-For": "198.51.100.1"}
    result = chat.post(FULL, {"GroupId": "g"}, headers=forged, remote_addr="203.0.113.7")
    assert (result.status_code, answer(result)["ErrorCode"]) == (403, 403)
    assert "203.0.113.7" in str(answer(result)["ErrorInfo"])
    via_proxy = chat.post(FULL, {"GroupId": "g"}, headers=forged, remote_addr="10.0.0.5")
    direct = chat.post(FULL, {"GroupId": "g"}, remote_addr="198.51.100.9")
    assert (via_proxy.content, direct.content) == (OK, OK)
    assert len(chat.fake.calls) == 2


def test_source_is_checked_before_the_signature(make_chat: MakeChat) -> None:
    """A stranger learns nothing about the signature check: it is refused for its address."""
    chat = make_chat(
        allowed_sources=parse_networks(["198.51.100.0/24"]), callback_tokens=("token",)
    )
    result = chat.post(FULL, {"GroupId": "g"}, remote_addr="203.0.113.7")
    assert (result.status_code, answer(result)["ErrorCode"]) == (403, 403)


def outcomes(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The outcome field of each canonical request line logged."""
    return [
        getattr(record, "outcome", None)
        for record in caplog.records
        if record.name == "adapter.request"
    ]


def test_fail_closed_refuses_with_the_configured_code(
    make_chat: MakeChat, caplog: pytest.LogCaptureFixture
) -> None:
    """With ON_POLICY_ERROR=deny an undecided creation is refused with the configured answer."""
    chat = make_chat(
        FakePolicyClient(error=FakeRpcError(grpc.StatusCode.UNAVAILABLE)),
        on_policy_error=OnPolicyError.DENY,
        deny_error_code=10123,
        deny_error_info="try later",
    )
    with caplog.at_level(logging.INFO):
        result = chat.post(BEFORE, {})
    assert result.status_code == 200
    assert answer(result) == {"ActionStatus": "OK", "ErrorCode": 10123, "ErrorInfo": "try later"}
    assert "fail-closed" in caplog.text
    assert outcomes(caplog) == ["fail-closed"]


def test_fail_open_is_logged_as_such(make_chat: MakeChat, caplog: pytest.LogCaptureFixture) -> None:
    """By default an undecided creation is allowed and the log line says fail-open."""
    chat = make_chat(FakePolicyClient(error=FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED)))
    with caplog.at_level(logging.INFO):
        assert chat.post(BEFORE, {}).content == OK
    assert outcomes(caplog) == ["fail-open"]


def test_unhandled_commands_are_counted_and_logged_at_powers_of_ten(
    chat: Chat, caplog: pytest.LogCaptureFixture
) -> None:
    """Each unhandled command is counted by name; the log shows it at 1 and 10, not in between."""
    with caplog.at_level(logging.INFO, logger="adapter.webhook"):
        for _ in range(12):
            assert chat.post("Group.CallbackAfterSendMsg", {}).content == OK
        chat.post("C2C.CallbackAfterSendMsg", {})
    lines = [r.getMessage() for r in caplog.records if "without acting" in r.getMessage()]
    assert [(line.split("'")[1], line.rsplit(" ", 1)[1].rstrip(")")) for line in lines] == [
        ("Group.CallbackAfterSendMsg", "1"),
        ("Group.CallbackAfterSendMsg", "10"),
        ("C2C.CallbackAfterSendMsg", "1"),
    ]
    assert chat.fake.calls == []


@pytest.mark.parametrize("failure", list(Failure))
def test_every_failure_answers_fail_with_its_status(failure: Failure) -> None:
    """Each row of the table: its HTTP status, ActionStatus FAIL, ErrorCode = status, summary."""
    answer_ = failure_answer(WebhookError(failure, "detail"))
    assert answer_.http_status == failure.http_status == answer_.error_code
    assert 400 <= failure.http_status < 600
    assert answer_.body.decode().startswith('{"ActionStatus":"FAIL"')
    assert f"{failure.summary}: detail" in answer_.body.decode()
    assert answer_.outcome == failure.name.lower()


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK])
def test_every_grpc_status_maps_to_a_failure(code: grpc.StatusCode) -> None:
    """Every gRPC error code has a failure: the listed ones as listed, the rest POLICY_FAILED."""
    error = grpc_failure(FakeRpcError(code, "internal detail"))
    assert error.failure is GRPC_FAILURES.get(code, Failure.POLICY_FAILED)
    assert ("internal detail" in str(error)) == (error.failure is Failure.POLICY_REJECTED)


@pytest.mark.parametrize(
    ("body", "params", "status", "message"),
    [
        (b'{"EventTime": ' + b"9" * 5000 + b"}", {}, 400, "body is not JSON"),
        (b"[" * 5000 + b"]" * 5000, {}, 400, "body is not JSON"),
        (b'{"GroupId": "g", "EventTime": "' + b"9" * 5000 + b'"}', {}, 400, "EventTime"),
        (b'{"GroupId": "\\ud800"}', {}, 400, "GroupId must be valid Unicode"),
        (b'{"Name": "\\udfff"}', {"CallbackCommand": BEFORE}, 400, "Name must be valid"),
        (b"{}", {"SdkAppid": "9" * 5000}, 403, "SdkAppid '999"),
    ],
)
def test_hostile_inputs_found_by_hypothesis_are_4xx(
    chat: Chat, body: bytes, params: dict[str, str], status: int, message: str
) -> None:
    """Huge numbers, deep nesting, lone surrogates and endless ids are refused, never a 500."""
    command = params.pop("CallbackCommand", FULL)
    result = chat.post(command, body, **params)
    assert (result.status_code, answer(result)["ErrorCode"]) == (status, status)
    assert message in str(answer(result)["ErrorInfo"])
    assert chat.fake.calls == []


def test_endless_request_time_is_401(make_chat: MakeChat) -> None:
    """A RequestTime of hundreds of digits is refused as not Unix seconds, not a crash."""
    chat = make_chat(callback_tokens=("token",))
    result = chat.post(FULL, {"GroupId": "g"}, Sign="0" * 64, RequestTime="9" * 400)
    assert (result.status_code, answer(result)["ErrorCode"]) == (401, 401)
    assert "RequestTime must be Unix seconds" in str(answer(result)["ErrorInfo"])
