"""The webhook endpoint through falcon.testing: what Chat sends, what the service gets, answers."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import grpc
import pytest

from adapter.answers import Failure
from adapter.signature import compute_sign
from chat_policy_shared import logs
from chatpolicy.v1 import creation_policy_service_pb2 as cpb
from chatpolicy.v1 import group_state_service_pb2 as spb
from tests.adapter.chat import APP, Chat, FakePolicyClient, FakeRpcError, MakeChat, answer
from tests.chat_samples import BEFORE_CREATE_SAMPLE, OK

BEFORE = "Group.CallbackBeforeCreateGroup"
FULL = "Group.CallbackAfterGroupFull"
SAMPLE_CREATE = {k: v for k, v in BEFORE_CREATE_SAMPLE.items() if k != "CallbackCommand"}


def test_creation_sample_is_translated_field_by_field(chat: Chat) -> None:
    """Chat's sample becomes one CheckGroupCreation with every field; the answer is OK."""
    result = chat.post(BEFORE, SAMPLE_CREATE, ClientIP="203.0.113.7", OptPlatform="iOS")
    assert (result.status_code, result.content) == (200, OK)
    assert result.headers["content-type"] == "application/json"
    [(request, _)] = chat.fake.calls
    assert request == cpb.CheckGroupCreationRequest(
        sdk_app_id=APP,
        operator_account="leckie",
        owner_account="leckie",
        group_type="Public",
        name="MyFirstGroup",
        create_group_num=123,
        member_accounts=["bob", "peter"],
        event_time=request.event_time,
        client_ip="203.0.113.7",
        opt_platform="iOS",
    )
    assert request.event_time.ToMilliseconds() == 1670574414123


def test_event_time_as_a_number_reads_the_same(chat: Chat) -> None:
    """EventTime as a JSON number gives the same time as the quoted form."""
    chat.post(BEFORE, {**SAMPLE_CREATE, "EventTime": 1670574414123})
    assert chat.fake.calls[0][0].event_time.ToMilliseconds() == 1670574414123


def test_absent_fields_stay_absent(chat: Chat) -> None:
    """A body with only CallbackCommand gives empty fields, no count and no time."""
    chat.post(BEFORE, {}, ClientIP=None, OptPlatform=None)
    [(request, _)] = chat.fake.calls
    assert request == cpb.CheckGroupCreationRequest(sdk_app_id=APP)
    assert not request.HasField("create_group_num")
    assert not request.HasField("event_time")


def test_members_without_an_account_are_skipped(chat: Chat) -> None:
    """MemberList entries lacking Member_Account are dropped; unknown fields are ignored."""
    chat.post(BEFORE, {"MemberList": [{"Member_Account": "a"}, {}, {"Role": "x"}], "New": 1})
    assert list(chat.fake.calls[0][0].member_accounts) == ["a"]


def test_refusal_carries_the_decisions_code_and_text(make_chat: MakeChat) -> None:
    """A DENY becomes HTTP 200, ActionStatus OK, the rule's code and its UTF-8 text."""
    fake = FakePolicyClient(
        creation=cpb.CheckGroupCreationResponse(
            decision=cpb.DECISION_DENY, error_code=10150, error_info="名字不行"
        )
    )
    result = make_chat(fake).post(BEFORE, SAMPLE_CREATE)
    assert result.status_code == 200
    expected = '{"ActionStatus":"OK","ErrorCode":10150,"ErrorInfo":"名字不行"}'.encode()
    assert result.content == expected


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL],
)
def test_creation_fails_open_when_the_service_cannot_answer(
    make_chat: MakeChat, code: grpc.StatusCode, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a decision the creation is allowed, as Chat does on timeout, and logged so."""
    chat = make_chat(FakePolicyClient(error=FakeRpcError(code, "down")))
    result = chat.post(BEFORE, SAMPLE_CREATE)
    assert (result.status_code, result.content) == (200, OK)
    assert "fail-open" in caplog.text


def test_group_full_sample_is_recorded(chat: Chat) -> None:
    """Chat's sample becomes RecordGroupFull; TopicId is passed when present."""
    sample = {"GroupId": "@TGS#2J4SZEAEL", "EventTime": "1670574414123"}
    assert chat.post(FULL, sample).content == OK
    assert chat.post(FULL, {**sample, "TopicId": "@TGS#_t"}).content == OK
    first, second = (request for request, _ in chat.fake.calls)
    expected = spb.RecordGroupFullRequest(sdk_app_id=APP, group_id="@TGS#2J4SZEAEL")
    expected.event_time.FromMilliseconds(1670574414123)
    assert first == expected
    expected.topic_id = "@TGS#_t"
    assert second == expected


def test_group_full_without_event_time_is_recorded_at_arrival(chat: Chat) -> None:
    """A full event without EventTime is stamped with the time the adapter received it."""
    before_ms = int(time.time() * 1000)
    chat.post(FULL, {"GroupId": "g"})
    after_ms = int(time.time() * 1000)
    assert before_ms <= chat.fake.calls[0][0].event_time.ToMilliseconds() <= after_ms


def test_redelivered_full_event_is_still_ok(make_chat: MakeChat) -> None:
    """An event the service already had (applied=False) is acknowledged all the same."""
    chat = make_chat(FakePolicyClient(applied=False))
    assert chat.post(FULL, {"GroupId": "g"}).content == OK


def test_group_full_without_group_id_is_refused_unsent(chat: Chat) -> None:
    """A full event without GroupId is 400 naming the field, and nothing is sent."""
    result = chat.post(FULL, {"EventTime": 1})
    assert result.status_code == 400
    assert answer(result) == {
        "ActionStatus": "FAIL",
        "ErrorCode": 400,
        "ErrorInfo": "invalid webhook field: GroupId is required",
    }
    assert chat.fake.calls == []


def test_full_event_the_service_rejects_is_400_and_not_spooled(make_chat: MakeChat) -> None:
    """INVALID_ARGUMENT cannot succeed later: the answer is 400 with the service's reason."""
    details = "group_id: is required"
    chat = make_chat(
        FakePolicyClient(error=FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, details))
    )
    result = chat.post(FULL, {"GroupId": "g"})
    document = answer(result)
    assert (result.status_code, document["ActionStatus"], document["ErrorCode"]) == (
        400,
        "FAIL",
        400,
    )
    assert details in str(document["ErrorInfo"])
    assert chat.spool.depth() == 0


def signed(token: str, offset_s: int = 0) -> dict[str, str]:
    """Sign and RequestTime for `token`, `offset_s` away from now."""
    request_time = str(int(time.time()) + offset_s)
    return {"Sign": compute_sign(token, request_time), "RequestTime": request_time}


@pytest.mark.parametrize("token", ["tok1", "tok2"])
def test_webhook_signed_with_any_token_is_accepted(make_chat: MakeChat, token: str) -> None:
    """With auth on, a Sign from any configured token passes."""
    chat = make_chat(callback_tokens=("tok1", "tok2"))
    assert chat.post(FULL, {"GroupId": "g"}, **signed(token)).content == OK
    assert len(chat.fake.calls) == 1


# Signed when the test runs, not when it is collected: a long suite would make them stale.
@pytest.mark.parametrize(
    ("make_params", "reason"),
    [
        (dict, "Sign and RequestTime are required"),
        (lambda: signed("wrong"), "Sign does not match"),
        (lambda: signed("tok1", -3600), "RequestTime is more than 60s away from now"),
        (lambda: signed("tok1", 3600), "RequestTime is more than 60s away from now"),
        (lambda: {**signed("tok1"), "SdkAppid": "1"}, None),
    ],
)
def test_unauthenticated_webhooks_get_401_or_403_and_reach_nothing(
    make_chat: MakeChat, make_params: Callable[[], dict[str, str]], reason: str | None
) -> None:
    """Missing, wrong or stale signatures are 401; a signed webhook of another app is 403."""
    chat = make_chat(callback_tokens=("tok1", "tok2"))
    result = chat.post(FULL, {"GroupId": "g"}, **make_params())
    document = answer(result)
    if reason is None:
        assert (result.status_code, document["ErrorCode"]) == (403, 403)
    else:
        assert (result.status_code, document["ErrorCode"]) == (401, 401)
        assert document["ErrorInfo"] == f"webhook signature rejected: {reason}"
    assert chat.fake.calls == []


def test_signature_is_checked_before_the_app(make_chat: MakeChat) -> None:
    """A bad signature with a wrong SdkAppid says 401: the app list is not revealed."""
    chat = make_chat(callback_tokens=("tok1",))
    assert chat.post(FULL, {"GroupId": "g"}, SdkAppid="1", **signed("x")).status_code == 401


@pytest.mark.parametrize("sdk_app_id", [None, "", "1", "abc", "1400000000x", "\uff11\uff14"])
def test_missing_or_unknown_sdkappid_is_403(chat: Chat, sdk_app_id: str | None) -> None:
    """Only the configured SdkAppids are served; nothing else reaches the service."""
    result = chat.post(FULL, {"GroupId": "g"}, SdkAppid=sdk_app_id)
    assert (result.status_code, answer(result)["ActionStatus"]) == (403, "FAIL")
    assert chat.fake.calls == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "body is not JSON"),
        (b"\xff\xfe", "body is not UTF-8"),
        (b"[]", "body is not a JSON object"),
        (b'"text"', "body is not a JSON object"),
        (b"", "body is not JSON"),
    ],
)
def test_malformed_bodies_are_400(chat: Chat, body: bytes, message: str) -> None:
    """A body that is not a UTF-8 JSON object is 400 saying so."""
    result = chat.post(BEFORE, body)
    assert result.status_code == 400
    assert message in str(answer(result)["ErrorInfo"])
    assert chat.fake.calls == []


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("Type", 5, "Type must be a string"),
        ("Operator_Account", ["a"], "Operator_Account must be a string"),
        ("MemberList", "bob", "MemberList must be an array"),
        ("MemberList", [5], "MemberList[0] must be an object"),
        ("MemberList", [{"Member_Account": 7}], "MemberList[0].Member_Account must be a string"),
        ("CreateGroupNum", True, "CreateGroupNum must be a whole number from 0 to 2**63-1"),
        ("CreateGroupNum", 1.5, "CreateGroupNum must be a whole number from 0 to 2**63-1"),
        ("EventTime", -1, "EventTime must be a whole number from 0 to 2**63-1"),
        ("EventTime", "12x", "EventTime must be a whole number from 0 to 2**63-1"),
        ("EventTime", 10**20, "EventTime must be a whole number from 0 to 2**63-1"),
        ("EventTime", 253402300800000, "EventTime must be Unix milliseconds before year 10000"),
    ],
)
def test_field_of_the_wrong_type_is_400_naming_it(
    chat: Chat, field: str, value: object, named: str
) -> None:
    """A field of the wrong type or range is refused with its name in ErrorInfo."""
    result = chat.post(BEFORE, {field: value})
    assert result.status_code == 400
    assert answer(result)["ErrorInfo"] == f"invalid webhook field: {named}"
    assert chat.fake.calls == []


def test_command_must_be_in_the_query_and_agree_with_the_body(chat: Chat) -> None:
    """No CallbackCommand, or a body naming another command, is 400; a body without one is fine."""
    assert chat.post("", b"{}").status_code == 400
    mismatch = json.dumps({"CallbackCommand": FULL, "GroupId": "g"}).encode()
    result = chat.post(BEFORE, mismatch)
    assert result.status_code == 400
    assert "differs" in str(answer(result)["ErrorInfo"])
    assert chat.post(FULL, b'{"GroupId": "g"}').content == OK
    assert len(chat.fake.calls) == 1


def test_body_limit_is_exact(make_chat: MakeChat) -> None:
    """A body of exactly the limit is read; one byte more is 413, unread and unsent."""
    chat = make_chat(max_body_bytes=100)
    body = json.dumps({"CallbackCommand": FULL, "GroupId": "g"}).encode()
    body = body[:-1] + b" " * (100 - len(body)) + b"}"
    assert len(body) == 100
    assert chat.post(FULL, body).content == OK
    result = chat.post(FULL, body + b" ")
    assert (result.status_code, answer(result)["ErrorCode"]) == (413, 413)
    assert len(chat.fake.calls) == 1


def test_other_commands_are_acknowledged_and_ignored(chat: Chat) -> None:
    """A webhook this adapter does not act on gets 200 OK and reaches nothing."""
    result = chat.post("Group.CallbackAfterSendMsg", {"GroupId": "g"})
    assert (result.status_code, result.content) == (200, OK)
    assert chat.fake.calls == []


def test_wrong_path_and_method_answer_in_chat_json(make_chat: MakeChat) -> None:
    """Other paths are 404 and GET is 405, both in Chat's JSON; the path is configurable."""
    chat = make_chat(webhook_path="/chat/callback")
    assert chat.post(FULL, {"GroupId": "g"}).content == OK
    chat.path = "/"
    result = chat.post(FULL, {"GroupId": "g"})
    assert (result.status_code, answer(result)["ErrorCode"]) == (404, 404)
    result = chat.client.simulate_get("/chat/callback")
    assert (result.status_code, answer(result)["ErrorCode"]) == (405, 405)


@pytest.mark.parametrize(
    ("given", "kept"), [("req-42.a:b", True), ("has space", False), ("x" * 200, False)]
)
def test_request_id_is_taken_if_sane_and_passed_to_the_service(
    chat: Chat, given: str, kept: bool
) -> None:
    """A sane X-Request-ID is echoed and sent along; anything else is replaced by a new one."""
    result = chat.post(FULL, {"GroupId": "g"}, headers={"X-Request-ID": given})
    echoed = result.headers["x-request-id"]
    assert (echoed == given) == kept
    assert len(echoed) == (len(given) if kept else 32)
    assert chat.fake.calls[0][1] == echoed


def test_unexpected_error_is_500_without_details(
    make_chat: MakeChat, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug answers 500 in Chat's JSON with no exception text; the log has the traceback."""
    chat = make_chat(FakePolicyClient(error=ValueError("secret internals")))
    result = chat.post(FULL, {"GroupId": "g"})
    assert result.status_code == 500
    assert answer(result) == {
        "ActionStatus": "FAIL",
        "ErrorCode": 500,
        "ErrorInfo": Failure.INTERNAL.summary,
    }
    assert "secret internals" in caplog.text


def test_one_log_line_per_request_without_secrets(
    make_chat: MakeChat, caplog: pytest.LogCaptureFixture
) -> None:
    """Each request logs one canonical line; no token or Sign is ever logged."""
    caplog.set_level(logging.INFO)
    chat = make_chat(callback_tokens=("s3cret-token",))
    params = signed("s3cret-token")
    chat.post(FULL, {"GroupId": "g"}, headers={"X-Request-ID": "r1"}, **params)
    chat.post(FULL, {"GroupId": "g"}, headers={"X-Request-ID": "r2"}, **signed("bad"))
    rendered = [logs.JsonFormatter().format(record) for record in caplog.records]
    lines = [
        json.loads(line)
        for line, record in zip(rendered, caplog.records, strict=True)
        if record.name == "adapter.request"
    ]
    assert len(lines) == 2
    assert lines[0]["request_id"] == "r1"
    assert (lines[0]["method"], lines[0]["path"], lines[0]["command"]) == ("POST", "/", FULL)
    assert (lines[0]["status"], lines[0]["outcome"], lines[0]["error_code"]) == (200, "recorded", 0)
    assert (lines[1]["request_id"], lines[1]["status"]) == ("r2", 401)
    assert lines[1]["outcome"] == "unauthenticated"
    assert all("s3cret-token" not in line and params["Sign"] not in line for line in rendered)


def request_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    """The canonical request lines logged so far, as the JSON the log holds."""
    formatter = logs.JsonFormatter()
    return [
        json.loads(formatter.format(record))
        for record in caplog.records
        if record.name == "adapter.request"
    ]


def test_the_request_line_carries_the_decision(
    make_chat: MakeChat, caplog: pytest.LogCaptureFixture
) -> None:
    """A creation's line carries the deciding rule, the decision's ID and the policy revision
    (the service's line for the call is DEBUG), the reason when refused, and the shadow and
    erring rules when there are any; a failed check or an after-event carries none."""
    caplog.set_level(logging.INFO)
    fake = FakePolicyClient(
        cpb.CheckGroupCreationResponse(
            decision=cpb.DECISION_ALLOW,
            rule_id="default",
            policy_revision="sha256:8c1d0e6b2f4a9d37",
            decision_id="d-1",
            reason="no rule matched",
        )
    )
    chat = make_chat(fake)
    chat.post(BEFORE, SAMPLE_CREATE)
    fake.creation = cpb.CheckGroupCreationResponse(
        decision=cpb.DECISION_DENY,
        error_code=10123,
        error_info="Public groups are closed",
        rule_id="no-public",
        policy_revision="sha256:8c1d0e6b2f4a9d37",
        decision_id="d-2",
        reason="group type Public is denied",
        shadow_rule_ids=["new-limit"],
        error_rule_ids=["broken-cel"],
    )
    chat.post(BEFORE, SAMPLE_CREATE)
    chat.post(FULL, {"GroupId": "g"})
    fake.error = FakeRpcError(grpc.StatusCode.UNAVAILABLE)
    chat.post(BEFORE, SAMPLE_CREATE)
    decision_keys = ("rule", "decision_id", "revision", "reason", "shadow_rules", "error_rules")
    decided = [
        (line["outcome"], {key: line[key] for key in decision_keys if key in line})
        for line in request_lines(caplog)
    ]
    assert decided == [
        (
            "allowed",
            {"rule": "default", "decision_id": "d-1", "revision": "sha256:8c1d0e6b2f4a9d37"},
        ),
        (
            "refused",
            {
                "rule": "no-public",
                "decision_id": "d-2",
                "revision": "sha256:8c1d0e6b2f4a9d37",
                "reason": "group type Public is denied",
                "shadow_rules": ["new-limit"],
                "error_rules": ["broken-cel"],
            },
        ),
        ("recorded", {}),
        ("fail-open", {}),
    ]
